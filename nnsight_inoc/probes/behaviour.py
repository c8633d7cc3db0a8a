"""Behaviour of one model under one system prompt: trait score of its greedy answers and projection onto v.

Persona drift (:mod:`nnsight_inoc.measures.drift`) is this measurement after training minus
before, on the same prompts. The model is measured through its :class:`TracedLM` (the base
model's, or a fresh wrapper around a trained adapter's model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from nnsight_inoc.data.traits import Trait, score_texts
from nnsight_inoc.probes.residuals import final_prompt_projection
from nnsight_inoc.trace.generation import greedy_answers
from nnsight_inoc.trace.tracing import TracedLM


def measure_behaviour(
    tlm: TracedLM,
    tok: PreTrainedTokenizerBase,
    trait: Trait,
    system_prompt: str,
    prompts: Sequence[str],
    v: torch.Tensor,
    *,
    max_new_tokens: int,
    generation_batch_size: int,
    read_batch_size: int,
) -> dict[str, Any]:
    """Trait score of greedy answers and mean final-prompt projection onto v (L, d), for one model.

    Returns system_prompt, prompts, answers, per-answer scores (NaN = unscorable), mean_score,
    share_above_half, n_unscored and projection ((L,) list). ValueError when there are no
    prompts or the model is in training mode (dropout during generation would make drift
    partly noise).
    """
    if not prompts:
        raise ValueError("no prompts to measure")
    if tlm.hf_model.training:
        raise ValueError("measure_behaviour needs a model in eval mode (call .eval() first)")
    answers = greedy_answers(tlm, tok, system_prompt, prompts, max_new_tokens, generation_batch_size)
    scores = score_texts(trait, answers)
    proj = final_prompt_projection(tlm, tok, system_prompt, prompts, v, read_batch_size)
    return {
        "system_prompt": system_prompt,
        "prompts": list(prompts),
        "answers": answers,
        "scores": scores.scores.tolist(),
        "mean_score": scores.mean,
        "share_above_half": scores.share_above_half,
        "n_unscored": scores.n_unscored,
        "projection": proj.tolist(),
    }
