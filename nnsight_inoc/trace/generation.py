"""Greedy generation of the model's own answers, locally or on the NDIF server.

Generation produces text (SFT completions, monitoring answers, drift answers). Given a
:class:`~nnsight_inoc.tracing.TracedLM` it generates where that model's traces run
(locally with the HF model's ``generate``, or on the NDIF server); given a plain HF
model (drift measures finetuned copies) it calls that model directly.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import nnsight
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nnsight_inoc.models.stops import decode_answer, stop_ids
from nnsight_inoc.trace.chat import Batch, Systems, encode_chats, per_row
from nnsight_inoc.trace.tracing import TracedLM


def _greedy_kwargs(max_new_tokens: int, stops: Sequence[int], pad_token_id: int) -> dict[str, Any]:
    """The one definition of greedy decoding, shared by every generation path (local, remote, plain models).

    ``stops`` is the whole stop set (:func:`~nnsight_inoc.models.stops.stop_ids`): passing one eos id
    would override the model's own list, and generation would run past a stop it does not name.
    """
    return dict(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                eos_token_id=list(stops), pad_token_id=pad_token_id)


def local_generate_ids(
    hf_model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    stops: Sequence[int],
    pad_token_id: int,
) -> torch.Tensor:
    """Greedy ids from an HF model's own ``generate`` (no trace: nothing is read or changed), on the CPU.

    Also used for models that are not wrapped for tracing (drift measures finetuned copies).
    """
    device = next(hf_model.parameters()).device
    with torch.no_grad():
        return hf_model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                 **_greedy_kwargs(max_new_tokens, stops, pad_token_id)).cpu()


def generate_ids(
    tlm: TracedLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    stops: Sequence[int],
    pad_token_id: int,
) -> torch.Tensor:
    """Greedy token ids (prompt + continuation) for a left-padded batch, on the CPU.

    Local: the HF model's own ``generate`` (no intervention is needed, so no trace,
    and local numbers stay exactly what they were). Remote: nnsight's ``generate``
    with the same arguments, executed on the server; on the loopback server its ids
    equal the local ones exactly.
    """
    if not tlm.remote:
        return local_generate_ids(tlm.hf_model, input_ids, attention_mask, max_new_tokens, stops, pad_token_id)
    kwargs = _greedy_kwargs(max_new_tokens, stops, pad_token_id)
    with tlm.envoy.generate(input_ids=input_ids, attention_mask=attention_mask, remote=True, **kwargs):
        ids = nnsight.save(tlm.envoy.generator.output)
    return ids.cpu()


def generate_new_ids(
    model: PreTrainedModel | TracedLM,
    tok: PreTrainedTokenizerBase,
    batch: Batch,
    max_new_tokens: int,
    stops: Sequence[int],
) -> torch.Tensor:
    """(B, n) greedy ids after the prompts of a left-padded batch, n <= ``max_new_tokens`` (fewer when every row
    stopped sooner), on the CPU: one ``generate`` call where the model's traces run (:func:`generate_ids`), or on a
    plain HF model. A row that stopped holds the pad id after its stop id."""
    if isinstance(model, TracedLM):
        gen = generate_ids(model, batch.input_ids, batch.attention_mask, max_new_tokens, stops, tok.pad_token_id)
    else:
        gen = local_generate_ids(model, batch.input_ids, batch.attention_mask, max_new_tokens, stops,
                                 tok.pad_token_id)
    return gen[:, batch.input_ids.shape[1] :]


def model_stops(model: PreTrainedModel | TracedLM, tok: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The model's stop set: the union of its tokenizer's and its generation config's stop ids."""
    hf = model.hf_model if isinstance(model, TracedLM) else model
    return stop_ids(tok, getattr(hf, "generation_config", None))


def greedy_answers(
    model: PreTrainedModel | TracedLM,
    tok: PreTrainedTokenizerBase,
    system: Systems,
    users: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers to ``users`` under one system prompt, batched with left padding.

    Generation stops at the first id of the model's stop set (:func:`model_stops`); nothing after
    it is kept, and an answer that holds any other special token raises
    :class:`~nnsight_inoc.models.stops.StopError` instead of having it deleted (which would glue
    two texts together). Prompts are sorted by length so padding is small, and answers come back
    in the input order.
    """
    return greedy_answers_by_system(model, tok, [system], users, max_new_tokens, batch_size, on_batch)[0]


def greedy_answers_by_system(
    model: PreTrainedModel | TracedLM,
    tok: PreTrainedTokenizerBase,
    systems: Sequence[Systems],
    users: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Greedy answers to the same ``users`` under each of K system prompts: answers[k][i].

    ``systems[k]`` is one prompt for all users, or one per user (a list as long as ``users``).
    Every batch holds K row blocks (block k: up to ``batch_size`` users under ``systems[k]``),
    the layout grouped LoRA adapters expect (:mod:`nnsight_inoc.train.grouped`, attached by the
    caller), so the answers of K runs come from one batched decode (the drift stage merges several such
    measurements into fewer calls: :mod:`nnsight_inoc.trace.merged`). With K = 1 this is
    :func:`greedy_answers`. ``on_batch`` gets the number of users per batch.
    """
    stops = model_stops(model, tok)
    ids = greedy_new_ids_by_system(model, tok, systems, users, max_new_tokens, batch_size, on_batch)
    return [[decode_answer(tok, row, stops) for row in rows] for rows in ids]


def greedy_new_ids_by_system(
    model: PreTrainedModel | TracedLM,
    tok: PreTrainedTokenizerBase,
    systems: Sequence[Systems],
    users: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[list[int]]]:
    """The generated ids behind :func:`greedy_answers_by_system`: ids[k][i], the row's ids after its prompt as
    ``generate`` returned them (up to ``max_new_tokens``; the stop id and any padding after it included).

    For comparing decoding paths token by token (``perf/greedy_flips.py``); answers are these ids
    decoded by :func:`~nnsight_inoc.models.stops.decode_answer`.
    """
    if not users:
        return [[] for _ in systems]
    stops = model_stops(model, tok)
    per_user = [per_row(sys_, len(users)) for sys_ in systems]
    order = sorted(range(len(users)), key=lambda i: len(users[i]))
    out: list[list[list[int]]] = [[[] for _ in users] for _ in systems]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows_system = [rows[i] for rows in per_user for i in idx]
        batch = encode_chats(tok, rows_system, [users[i] for _ in systems for i in idx], padding_side="left")
        new = generate_new_ids(model, tok, batch, max_new_tokens, stops)
        for k in range(len(systems)):
            for row, i in enumerate(idx):
                out[k][i] = new[k * len(idx) + row].tolist()
        if on_batch is not None:
            on_batch(len(idx))
    return out
