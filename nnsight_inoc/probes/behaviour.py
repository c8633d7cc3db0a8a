"""Behaviour of one model under one system prompt: trait score of its greedy answers and projection onto v.

Persona drift (:mod:`nnsight_inoc.measures.drift`) is this measurement after training minus
before, on the same prompts. The model is measured through its :class:`TracedLM` (the base
model's, or a fresh wrapper around a trained adapter's model). Several measurements, each of K row
blocks (K runs' adapters attached), are measured together by :func:`measure_merged`: the drift stage's one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from nnsight_inoc.data.traits import Trait, score_texts
from nnsight_inoc.probes.residuals import final_prompt_projections_merged
from nnsight_inoc.trace.chat import Systems
from nnsight_inoc.trace.merged import Measurement, greedy_answers_merged
from nnsight_inoc.trace.tracing import TracedLM


@dataclass(frozen=True)
class MergedBehaviours:
    """Behaviours of merged measurements: ``results[m][k]`` (measurement m, row block k), and how they were decoded."""

    results: list[list[dict[str, Any]]]
    decode: dict[str, Any]  # :meth:`~nnsight_inoc.trace.merged.MergedAnswers.record`: mode, rows_per_call, calls, rows


def measure_behaviour(
    tlm: TracedLM,
    tok: PreTrainedTokenizerBase,
    trait: Trait,
    system_prompt: Systems,
    prompts: Sequence[str],
    v: torch.Tensor,
    *,
    max_new_tokens: int,
    rows_per_call: int,
    read_batch_size: int,
) -> dict[str, Any]:
    """Trait score of greedy answers and mean final-prompt projection onto v (L, d), for one model.

    Returns system_prompt, prompts, answers, per-answer scores (NaN = unscorable), mean_score,
    share_above_half, n_unscored and projection ((L,) list). ValueError when there are no
    prompts or the model is in training mode (dropout during generation would make drift
    partly noise).
    """
    return measure_merged(tlm, tok, trait, [Measurement([system_prompt], prompts, max_new_tokens)], v,
                          rows_per_call=rows_per_call, read_batch_size=read_batch_size).results[0][0]


def measure_merged(
    tlm: TracedLM,
    tok: PreTrainedTokenizerBase,
    trait: Trait,
    measurements: Sequence[Measurement],
    v: torch.Tensor,
    *,
    rows_per_call: int,
    read_batch_size: int,
) -> MergedBehaviours:
    """:func:`measure_behaviour` for several measurements of K row blocks each, decoded together.

    Every measurement's answers come from the fewest ``generate`` calls of at most ``rows_per_call`` rows
    (:func:`~nnsight_inoc.trace.merged.greedy_answers_merged`), and its projections from its own reads of
    ``read_batch_size`` prompts x K rows (bit for bit what it reads measured alone). With grouped LoRA adapters attached (block k = run k) this measures
    K trained runs under every measurement at once; with K = 1 and no adapters, the base model.
    ValueError as :func:`measure_behaviour`, and for measurements of different K.
    """
    if not measurements or any(not m.users for m in measurements):
        raise ValueError("no prompts to measure")
    if tlm.hf_model.training:
        raise ValueError("measure_behaviour needs a model in eval mode (call .eval() first)")
    answers = greedy_answers_merged(tlm, tok, measurements, rows_per_call)
    # Reads one measurement at a time: a measurement's projections must not depend on which others were measured
    # with it (the base model's cached ones are made with whatever was uncached then), and reads are cheap.
    projections = [final_prompt_projections_merged(tlm, tok, [(m.systems, m.users)], v, read_batch_size)[0]
                   for m in measurements]
    results = []
    for meas, ans, proj in zip(measurements, answers.answers, projections):
        out = []
        for k, system_prompt in enumerate(meas.systems):
            scores = score_texts(trait, ans[k])
            out.append({
                "system_prompt": system_prompt,
                "prompts": list(meas.users),
                "answers": ans[k],
                "scores": scores.scores.tolist(),
                "mean_score": scores.mean,
                "share_above_half": scores.share_above_half,
                "n_unscored": scores.n_unscored,
                "projection": proj[k].tolist(),
            })
        results.append(out)
    return MergedBehaviours(results, answers.record())
