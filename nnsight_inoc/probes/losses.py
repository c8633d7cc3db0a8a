"""Per-example SFT losses under a system prompt, no gradient (the loss-matched and content-leak controls rank
prompts by them; the loss split reads them)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from nnsight_inoc.trace.chat import Systems, encode_chats, per_row
from nnsight_inoc.trace.tracing import TracedLM, sequence_losses


def example_losses(
    tlm: TracedLM, tok: PreTrainedTokenizerBase, system: Systems, prompts: Sequence[str],
    completions: Sequence[str], batch_size: int,
) -> np.ndarray:
    """(n,) float32 mean CE over each example's completion tokens (nats), in input order, under one system
    prompt or one per example (ValueError when that list is not as long as ``prompts``)."""
    systems = per_row(system, len(prompts))
    out = []
    for s in range(0, len(prompts), batch_size):
        batch = encode_chats(tok, systems[s : s + batch_size], prompts[s : s + batch_size],
                             completions[s : s + batch_size])
        out.append(sequence_losses(tlm, batch).numpy())
    return np.concatenate(out)
