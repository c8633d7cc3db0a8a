"""Stage `drift`: behaviour and projection before vs after training, for every run of the plan.

Drift is measured under the neutral test prompt (does the trait leak out?) and under the
run's own training prompt (did the trait become conditional on that prompt?). The base
model's measurements are cached per system prompt (``finetune/pre/<hash>.json``); a run
with ``drift.json`` is skipped.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.progress import log, task
from nnsight_inoc.measures.drift import drift as drift_of
from nnsight_inoc.probes.behaviour import measure_behaviour
from nnsight_inoc.stages.drift_summary import summarise_drift
from nnsight_inoc.stages.finetune import free_memory
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec, build_plan
from nnsight_inoc.study import Study
from nnsight_inoc.trace.tracing import TracedLM, wrap
from nnsight_inoc.train.lora import load_trained

ANSWERS_KEPT = 5  # answers per measurement kept in drift.json (the pre cache keeps all of them)


def behaviour(study: Study, tlm: TracedLM, system: str, prompts: list[str], v: torch.Tensor) -> dict[str, Any]:
    """:func:`~nnsight_inoc.probes.behaviour.measure_behaviour` with this study's generation settings."""
    return measure_behaviour(tlm, study.loaded.tokenizer, study.trait, system, prompts, v,
                             max_new_tokens=study.cfg.extract.max_new_tokens,
                             generation_batch_size=study.cfg.data.generation_batch_size,
                             read_batch_size=study.cfg.extract.batch_size)


def pre_behaviour(study: Study, system: str, prompts: list[str], v: torch.Tensor) -> dict[str, Any]:
    """Base-model behaviour under one system prompt, cached in finetune/pre/<hash>.json.

    One file per prompt (not one shared file) so parallel workers never overwrite each
    other's entries; two workers computing the same entry write the same content atomically.
    """
    key = hashlib.sha256(json.dumps([system, prompts]).encode()).hexdigest()[:16]
    path = study.layout.pre_behaviour(key)
    if path.is_file():
        rec = A.read_json(path)
        if rec["system"] == system and rec["prompts"] == prompts:
            return rec["behaviour"]
    result = behaviour(study, study.tlm, system, prompts, v)
    A.write_json(path, {"system": system, "prompts": prompts, "behaviour": result})
    return result


def drift_run(study: Study, plan: FinetunePlan, run: RunSpec) -> dict[str, Any]:
    """Pre vs post for one trained run; writes (and returns) its drift.json, skipping a finished one."""
    study.require_local("Loading a trained LoRA adapter")  # before any work: never half-way
    files = study.layout.run(run.condition, run.seed)
    prompts = plan.drift_prompts
    if not files.train_json.is_file():
        raise FileNotFoundError(f"{files.train_json}: run `finetune` first")
    if files.drift_json.is_file():
        rec = A.read_json(files.drift_json)
        if rec["n_prompts"] != len(prompts):
            raise ValueError(f"{files.drift_json} used another number of prompts; use a new --run-dir")
        return rec
    t0 = time.time()
    model = load_trained(study.loaded.hf_model, files.folder)
    tlm = wrap(model, remote=False, autocast=study.tlm.autocast)
    rec: dict[str, Any] = {"condition": run.condition, "seed": run.seed, "n_prompts": len(prompts)}
    for label, sys_prompt in (("neutral_prompt", plan.neutral_prompt), ("training_prompt", run.system_prompt)):
        pre = pre_behaviour(study, sys_prompt, prompts, plan.v)
        post = behaviour(study, tlm, sys_prompt, prompts, plan.v)
        rec[label] = {"pre": _brief(pre), "post": _brief(post), "drift": drift_of(pre, post)}
    rec["wall_s"] = time.time() - t0  # pre measurements come from the cache after the first run
    A.write_json(files.drift_json, rec)
    log(f"drift {run.name}: neutral-prompt trait score "
        f"{rec['neutral_prompt']['pre']['mean_score']:.3f} -> {rec['neutral_prompt']['post']['mean_score']:.3f}")
    del model, tlm
    free_memory()
    return rec


def run_drift(study: Study, which: str = "all") -> dict[str, Any]:
    """Pre vs post behaviour and projection for every trained run of ``which``, then the summary."""
    t0 = time.time()
    plan = build_plan(study, which, for_training=False)
    with task(f"drift sweep ({which})", len(plan.runs)) as sweep:  # one overall bar; generation bars inside
        for run in plan.runs:
            drift_run(study, plan, run)
            sweep(1)
    summary = summarise_drift(study, which)
    study.prov.stage(f"drift_{which}", time.time() - t0)
    return summary


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("mean_score", "share_above_half", "n_unscored", "projection")
    return {k: m[k] for k in keep} | {"answers_head": m["answers"][:ANSWERS_KEPT]}
