"""Stage `align`: per-example gradient alignment with v(l) under each training condition.

Each condition's measurements are saved on their own (``align/cond_<name>.pt``) so
``align --condition inoc`` and ``--condition all`` compose; :func:`summarise` then
reads whatever conditions exist and applies the controls.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import LOSSMATCH_CONDITION, StudyConfig
from nnsight_inoc.core.errors import UsageProblem
from nnsight_inoc.core.progress import log, task
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.stages.align_summary import summarise
from nnsight_inoc.stages.lossmatch import select_lossmatch
from nnsight_inoc.study import SFTSet, Study, ensure_sft, load_directions


def check_condition(cfg: StudyConfig, condition: str) -> None:
    """Refuse a condition name the config does not have, before any model or file is touched (a usage error)."""
    allowed = [*cfg.align.conditions, LOSSMATCH_CONDITION, "all"]
    if condition not in allowed:
        raise UsageProblem(f"align --condition {condition!r}: unknown condition; choose from {', '.join(allowed)} "
                           "(align.conditions in the config)")


def condition_prompts(study: Study, sft: SFTSet, wanted: list[str]) -> dict[str, str]:
    """Condition -> training system prompt for the wanted conditions (the loss-matched one chosen on demand)."""
    conds = dict(study.cfg.align.conditions)
    if LOSSMATCH_CONDITION in wanted:
        conds[LOSSMATCH_CONDITION] = select_lossmatch(study, sft)["chosen_prompt"]
    unknown = [c for c in wanted if c not in conds]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; configured: {sorted(conds)} (+ {LOSSMATCH_CONDITION})")
    return {c: conds[c] for c in wanted}


def measure_condition(study: Study, name: str, system: str, sft: SFTSet, v: torch.Tensor) -> dict[str, Any]:
    """Gradient metrics for every SFT example under one training-time system prompt (what cond_<name>.pt holds)."""
    cfg = study.cfg.align
    n = len(sft.prompts)
    with task(f"align: {name}", n) as adv:
        m = gradient_metrics(study.tlm, study.loaded.tokenizer, system, sft.prompts, sft.completions, v,
                             n_assistant=cfg.n_assistant_tokens, batch_size=cfg.batch_size, ids=sft.ids,
                             label=f"condition {name}", on_batch=adv)
    return {
        "condition": name,
        "system_prompt": system,
        "ids": list(sft.ids),
        "positions": m.positions,
        "cos": m.cos,
        "proj": m.proj,
        "norm": m.norm,
        "loss": m.loss,
        "mean_unit_neg_grad": (m.unit_neg_grad_sum / n).float(),  # (L, P, d): all the random-direction null needs
        "direction_position": cfg.direction_position,
    }


def run_align(study: Study, condition: str) -> dict[str, Any]:
    """Measure one condition, or all of them (``'all'``) followed by the summary with controls."""
    check_condition(study.cfg, condition)  # before the directions and SFT set are read
    t0 = time.time()
    v_all, meta = load_directions(study)
    v = v_all[:, list(meta["positions"]).index(study.cfg.align.direction_position)]
    sft = ensure_sft(study)
    study.prov.fact("sft_excluded", sft.excluded)
    wanted = [*study.cfg.align.conditions, LOSSMATCH_CONDITION] if condition == "all" else [condition]
    prompts = condition_prompts(study, sft, wanted)
    for name, system in prompts.items():
        res = measure_condition(study, name, system, sft, v)
        res["layer"] = meta["layer"]
        A.save_torch(study.layout.align_condition(name), res)
        log(f"align {name}: mean loss {float(res['loss'].mean()):.4f}, n={len(res['ids'])}")
    study.prov.stage(f"align_{condition}", time.time() - t0, conditions=list(prompts))
    return summarise(study)
