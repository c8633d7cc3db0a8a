"""Persona drift: trait behaviour and trait-direction projection before vs after fine-tuning.

Two views of the same question ("did training move the model toward the trait?"):
behaviour (greedy answers scored by the trait's scorer) and representation (the
residual stream at the final prompt token projected onto v(l)). Both are measured on
the same prompts under the same system prompt before and after, and :func:`drift`
refuses to subtract measurements that were not taken on the same inputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .chat import encode_chats
from .generation import greedy_answers
from .study import Study
from .traits import score_texts
from .tracing import TracedLM, read_residuals, wrap


def _traced(study: Study, model: nn.Module) -> TracedLM:
    """Reuse the study's wrapper for the base model; wrap anything else (a PEFT model) afresh."""
    if model is study.loaded.hf_model:
        return study.tlm
    return wrap(model, remote=False, autocast=study.tlm.autocast)


def final_prompt_projection(
    study: Study, model: nn.Module, system_prompt: str, prompts: list[str], v: torch.Tensor
) -> torch.Tensor:
    """Mean over prompts of <h_l(final prompt token), v_l>, per layer: (L,) float64."""
    tlm = _traced(study, model)
    if tuple(v.shape) != (tlm.n_layers, tlm.d_model):
        raise ValueError(f"v must be (n_layers, d_model) = {(tlm.n_layers, tlm.d_model)}, got {tuple(v.shape)}")
    vv = v.detach().double().cpu()
    bs = study.cfg.extract.batch_size
    total = torch.zeros(tlm.n_layers, dtype=torch.float64)
    for s in range(0, len(prompts), bs):
        batch = encode_chats(study.loaded.tokenizer, system_prompt, prompts[s : s + bs])
        h = read_residuals(tlm, batch, batch.final_prompt_idx[:, None])  # (B, L, 1, d)
        total += torch.einsum("bld,ld->l", h[:, :, 0].double(), vv)
    return total / len(prompts)


def measure_behaviour(
    study: Study, model: nn.Module, system_prompt: str, prompts: list[str], v: torch.Tensor
) -> dict[str, Any]:
    """Trait score of greedy answers and final-prompt projection onto v, for one model.

    The model must be in eval mode: dropout during generation would make "drift" partly noise.
    """
    if not prompts:
        raise ValueError("no prompts to measure")
    if model.training:
        raise ValueError("measure_behaviour needs a model in eval mode (call .eval() first)")
    answers = greedy_answers(
        model,
        study.loaded.tokenizer,
        system_prompt,
        prompts,
        study.cfg.extract.max_new_tokens,
        study.cfg.data.generation_batch_size,
    )
    scores = score_texts(study.trait, answers)
    proj = final_prompt_projection(study, model, system_prompt, prompts, v)
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


def drift(pre: dict[str, Any], post: dict[str, Any]) -> dict[str, Any]:
    """post minus pre for mean score, share above 0.5 and per-layer projection.

    Raises if the two were measured on different prompts, system prompts or layer counts:
    a difference of unlike measurements is not drift.
    """
    for key in ("prompts", "system_prompt"):
        if pre[key] != post[key]:
            raise ValueError(f"pre and post were measured with different {key}; drift needs the same inputs")
    if len(pre["projection"]) != len(post["projection"]):
        raise ValueError(
            f"projection has {len(pre['projection'])} layers before and {len(post['projection'])} after"
        )
    return {
        "mean_score": post["mean_score"] - pre["mean_score"],
        "share_above_half": post["share_above_half"] - pre["share_above_half"],
        "projection": [b - a for a, b in zip(pre["projection"], post["projection"])],
        "n_unscored": {"pre": pre["n_unscored"], "post": post["n_unscored"]},
    }
