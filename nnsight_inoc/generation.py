"""Batched greedy generation of the model's own answers.

Generation produces text (SFT completions, monitoring answers, drift answers). Given a
:class:`~nnsight_inoc.tracing.TracedLM` it generates where that model's traces run
(locally with the HF model's ``generate``, or on the NDIF server); given a plain HF
model (drift measures finetuned copies) it calls that model directly.
"""

from __future__ import annotations

from typing import Callable, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .chat import encode_chats
from .tracing import TracedLM, generate_ids, local_generate_ids


def greedy_answers(
    model: PreTrainedModel | TracedLM,
    tok: PreTrainedTokenizerBase,
    system: str | None,
    users: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers to ``users`` under one system prompt, batched with left padding.

    Generation stops at the end-of-turn token; text after it is discarded and the
    special tokens are stripped. Prompts are sorted by length so padding is small,
    and answers come back in the input order.
    """
    if not users:
        return []
    tlm = model if isinstance(model, TracedLM) else None
    order = sorted(range(len(users)), key=lambda i: len(users[i]))
    out: list[str | None] = [None] * len(users)
    eos = tok.eos_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = encode_chats(tok, system, [users[i] for i in idx], padding_side="left")
        if tlm is not None:
            gen = generate_ids(tlm, batch.input_ids, batch.attention_mask, max_new_tokens, eos, tok.pad_token_id)
        else:
            gen = local_generate_ids(model, batch.input_ids, batch.attention_mask, max_new_tokens, eos,
                                     tok.pad_token_id)
        new = gen[:, batch.input_ids.shape[1] :]
        for row, i in enumerate(idx):
            ids = new[row].tolist()
            if eos in ids:
                ids = ids[: ids.index(eos)]
            out[i] = tok.decode(ids, skip_special_tokens=True).strip()
        if on_batch is not None:
            on_batch(len(idx))
    return [o if o is not None else "" for o in out]
