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
from nnsight_inoc.probes.residuals import final_prompt_projections
from nnsight_inoc.trace.chat import Systems
from nnsight_inoc.trace.generation import greedy_answers_by_system
from nnsight_inoc.trace.tracing import TracedLM


def measure_behaviour(
    tlm: TracedLM,
    tok: PreTrainedTokenizerBase,
    trait: Trait,
    system_prompt: Systems,
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
    return measure_behaviours(tlm, tok, trait, [system_prompt], prompts, v, max_new_tokens=max_new_tokens,
                              generation_batch_size=generation_batch_size, read_batch_size=read_batch_size)[0]


def measure_behaviours(
    tlm: TracedLM,
    tok: PreTrainedTokenizerBase,
    trait: Trait,
    systems: Sequence[Systems],
    prompts: Sequence[str],
    v: torch.Tensor,
    *,
    max_new_tokens: int,
    generation_batch_size: int,
    read_batch_size: int,
) -> list[dict[str, Any]]:
    """:func:`measure_behaviour` for K row blocks at once, block k under ``systems[k]`` (one dict per block).

    With grouped LoRA adapters attached to the model (block k = run k), this measures K trained
    runs in one batched decode and one read per batch; with K copies of one prompt and no
    adapters, it is K identical measurements.
    """
    if not prompts:
        raise ValueError("no prompts to measure")
    if tlm.hf_model.training:
        raise ValueError("measure_behaviour needs a model in eval mode (call .eval() first)")
    answers = greedy_answers_by_system(tlm, tok, systems, prompts, max_new_tokens, generation_batch_size)
    proj = final_prompt_projections(tlm, tok, systems, prompts, v, read_batch_size)
    out = []
    for k, system_prompt in enumerate(systems):
        scores = score_texts(trait, answers[k])
        out.append({
            "system_prompt": system_prompt,
            "prompts": list(prompts),
            "answers": answers[k],
            "scores": scores.scores.tolist(),
            "mean_score": scores.mean,
            "share_above_half": scores.share_above_half,
            "n_unscored": scores.n_unscored,
            "projection": proj[k].tolist(),
        })
    return out
