"""Stage `drift`: behaviour and projection before vs after training, for every run of the plan.

Drift is measured under the neutral test prompt (does the trait leak out?), under the run's
own training prompt (did the trait become conditional on that prompt?) and, when
``[drift] panel`` lists them, under a panel of trait-free test prompts never used in training
(issue 16: the neutral test prompt is also the neutral training prompt, so every other training
prompt doubles as a change of context; the panel mean is the main drift measure). A content-leak
run's training prompt quotes each drift prompt's own untraited answer: the base model's answer
under the neutral prompt. The base model's measurements are cached per system prompt
(``finetune/pre/<hash>.json``); a run with ``drift.json`` is skipped. Every measurement of a group of runs is
decoded together (issue 24, item 4: :func:`measure`), and so are the base model's uncached ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.progress import log, task
from nnsight_inoc.measures.drift import drift as drift_of
from nnsight_inoc.probes.behaviour import MergedBehaviours, measure_merged
from nnsight_inoc.stages.drift_summary import summarise_drift
from nnsight_inoc.stages.finetune import free_memory
from nnsight_inoc.stages.lossmatch import passes_trait_check
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec, build_plan
from nnsight_inoc.study import Study
from nnsight_inoc.trace.chat import Systems
from nnsight_inoc.trace.merged import Measurement
from nnsight_inoc.train.grouped_io import load_peft

ANSWERS_KEPT = 5  # answers per measurement kept in drift.json (the pre cache keeps all of them)


def measure(study: Study, measurements: Sequence[Measurement], v: torch.Tensor) -> MergedBehaviours:
    """:func:`~nnsight_inoc.probes.behaviour.measure_merged` on the study's traced model with its settings: every
    measurement (K row blocks each; attach K adapters to measure K runs) decoded together, in calls of at most
    ``execution.drift_rows_per_call`` rows, and read in traces of ``extract.batch_size`` prompts x K rows."""
    return measure_merged(study.tlm, study.loaded.tokenizer, study.trait, measurements, v,
                          rows_per_call=study.cfg.execution.drift_rows_per_call,
                          read_batch_size=study.cfg.extract.batch_size)


def pre_behaviours(study: Study, wanted: Sequence[tuple[Systems, list[str], int]],
                   v: torch.Tensor) -> list[dict[str, Any]]:
    """Base-model behaviour for each (system prompt or one per prompt, prompts, max_new_tokens), cached in
    finetune/pre/<hash>.json; the uncached ones are measured together (:func:`measure`, K = 1, one decode).

    One file per entry (not one shared file) so parallel workers never overwrite each other's entries; two
    workers computing the same entry write the same content atomically. The key of the default answer length
    is the published one (old run folders keep their cache). Call with no adapter attached.
    """
    paths = [study.layout.pre_behaviour(_pre_key(study, *w)) for w in wanted]
    found: dict[Path, dict[str, Any]] = {}
    todo: dict[Path, tuple[Systems, list[str], int]] = {}  # one measurement per missing entry, repeats measured once
    for path, (system, prompts, tokens) in zip(paths, wanted):
        if path in found or path in todo:
            continue
        if path.is_file():
            rec = A.read_json(path)
            if rec["system"] == system and rec["prompts"] == prompts and rec.get("max_new_tokens", tokens) == tokens:
                found[path] = rec["behaviour"]
                continue
        todo[path] = (system, prompts, tokens)
    if todo:
        measured = measure(study, [Measurement([s], p, t) for s, p, t in todo.values()], v).results
        for (path, (system, prompts, tokens)), (result,) in zip(todo.items(), measured):
            A.write_json(path, {"system": system, "prompts": prompts, "max_new_tokens": tokens, "behaviour": result})
            found[path] = result
    return [found[path] for path in paths]


def pre_behaviour(study: Study, system: Systems, prompts: list[str], v: torch.Tensor,
                  max_new_tokens: int | None = None) -> dict[str, Any]:
    """:func:`pre_behaviours` of one entry; ``max_new_tokens`` defaults to ``extract.max_new_tokens``."""
    tokens = study.cfg.extract.max_new_tokens if max_new_tokens is None else max_new_tokens
    return pre_behaviours(study, [(system, prompts, tokens)], v)[0]


def _pre_key(study: Study, system: Systems, prompts: list[str], tokens: int) -> str:
    ident: list[Any] = [system, prompts] + ([] if tokens == study.cfg.extract.max_new_tokens else [tokens])
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def training_prompt_at_test(study: Study, plan: FinetunePlan, run: RunSpec) -> Systems:
    """The run's training prompt on the drift prompts: fixed, or (a content leak) quoting each drift prompt's
    untraited answer, the base model's own greedy answer under the neutral prompt."""
    if not run.prompting.is_leak:
        return run.system_prompt
    neutral = pre_behaviour(study, plan.neutral_prompt, plan.drift_prompts, plan.v)
    return run.prompting.systems(neutral["answers"])


def panel_prompts(study: Study) -> list[str]:
    """The held-out eval prompts answered under each panel prompt (``drift.panel_prompts`` of them)."""
    return [p.text for p in study.splits.eval[: study.cfg.drift.panel_prompts]]


def post_measurements(study: Study, plan: FinetunePlan, train_systems: Sequence[Systems]) -> list[Measurement]:
    """What drift measures on K runs (block k = run k): the neutral prompt and each run's training prompt on the
    drift prompts (``extract.max_new_tokens``), then every panel prompt on :func:`panel_prompts`
    (``drift.panel_max_new_tokens``), in that order."""
    k, tokens, cfg = len(train_systems), study.cfg.extract.max_new_tokens, study.cfg.drift
    users = panel_prompts(study)
    return ([Measurement([plan.neutral_prompt] * k, plan.drift_prompts, tokens),
             Measurement(list(train_systems), plan.drift_prompts, tokens)]
            + [Measurement([p] * k, users, cfg.panel_max_new_tokens) for p in cfg.panel])


def pre_measurements(study: Study, plan: FinetunePlan,
                     train_systems: Sequence[Systems]) -> list[list[dict[str, Any]]]:
    """The base model's behaviour for each of :func:`post_measurements` (one per run where the prompts differ), from
    the cache or decoded together; refuses a panel prompt that elicits the trait.

    The check is the loss-matched pool's (``align.lossmatch_max_trait_score`` above the reference,
    ``align.lossmatch_trait_reference``), against the neutral prompt's answers to the same prompts.
    ValueError naming the prompt otherwise: drift under a trait-eliciting test prompt is not drift.
    """
    posts = post_measurements(study, plan, train_systems)
    wanted = [(s, list(m.users), m.max_new_tokens) for m in posts for s in m.systems]
    cfg, acfg = study.cfg.drift, study.cfg.align
    if cfg.panel:  # the panel check's reference: the neutral prompt on the panel's prompts
        wanted.append((plan.neutral_prompt, panel_prompts(study), cfg.panel_max_new_tokens))
    got = pre_behaviours(study, wanted, plan.v)
    k = len(train_systems)
    out = [got[j * k : (j + 1) * k] for j in range(len(posts))]
    if cfg.panel:
        reference = got[-1]["mean_score"] if acfg.lossmatch_trait_reference == "neutral" else 0.0
        for p, pre in zip(cfg.panel, out[2:]):
            if not passes_trait_check(pre[0]["mean_score"], reference, acfg.lossmatch_max_trait_score):
                raise ValueError(f"drift panel prompt {p!r} elicits the trait before training (answers score "
                                 f"{pre[0]['mean_score']} against {reference:.3f}); choose a trait-free test prompt "
                                 "for drift.panel instead")
    return out


def drift_run(study: Study, plan: FinetunePlan, run: RunSpec) -> dict[str, Any]:
    """Pre vs post for one trained run; writes (and returns) its drift.json, skipping a finished one."""
    return drift_group(study, plan, [run])[0]


def drift_group(study: Study, plan: FinetunePlan, runs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """Pre vs post for trained runs, measured together; writes (and returns) each run's drift.json.

    The runs' saved adapters are attached to the study's own base model as K row blocks
    (:mod:`nnsight_inoc.train.grouped`; no copy of the base), and every measurement of every run (neutral
    prompt, training prompt, panel) is decoded together (:func:`measure`: the fewest ``generate`` calls of at
    most ``execution.drift_rows_per_call`` rows; ``drift.json`` records them under ``decode``) and read together.
    The base model's uncached measurements are decoded together the same way before the adapters are attached.
    Finished runs (drift.json present) are returned as they are.
    """
    study.require_local("Loading a trained LoRA adapter")  # before any work: never half-way
    prompts = plan.drift_prompts
    out: dict[str, dict[str, Any]] = {}
    todo = []
    for run in runs:
        files = study.layout.run(run.condition, run.seed)
        if not files.train_json.is_file():
            raise FileNotFoundError(f"{files.train_json}: run `finetune` first")
        if files.drift_json.is_file():
            rec = A.read_json(files.drift_json)
            if rec["n_prompts"] != len(prompts):
                raise ValueError(f"{files.drift_json} used another number of prompts; use a new --run-dir")
            if sorted(rec.get("panel", {})) != sorted(study.cfg.drift.panel):
                raise ValueError(f"{files.drift_json} was measured under another drift panel; use a new --run-dir "
                                 "(or set [drift] panel as it was)")
            out[run.name] = rec
        else:
            todo.append(run)
    if todo:
        t0 = time.time()
        base = study.loaded.hf_model
        adapters = load_peft([study.layout.run(r.condition, r.seed).adapter for r in todo], base)
        base.eval()
        train_systems = [training_prompt_at_test(study, plan, r) for r in todo]  # before attaching: pre is the base model
        pre = pre_measurements(study, plan, train_systems)
        with adapters.attached(base, None):
            post = measure(study, post_measurements(study, plan, train_systems), plan.v)
        wall = (time.time() - t0) / len(todo)  # pre measurements come from the cache after the first run
        for k, run in enumerate(todo):
            rec: dict[str, Any] = {"condition": run.condition, "seed": run.seed, "n_prompts": len(prompts)}
            for j, label in enumerate(("neutral_prompt", "training_prompt")):
                rec[label] = _pre_post(pre[j][k], post.results[j][k])
            if run.prompting.is_leak:
                rec["training_prompt"]["leak"] = run.prompting.record()
            if study.cfg.drift.panel:
                rec["panel"] = {p: _pre_post(pre[2 + j][k], post.results[2 + j][k])
                                for j, p in enumerate(study.cfg.drift.panel)}
                rec["panel_design"] = {"n_prompts": len(panel_prompts(study)),
                                       "max_new_tokens": study.cfg.drift.panel_max_new_tokens}
            rec["wall_s"] = wall
            rec["decode"] = post.decode  # the trained runs' decode: every measurement of the group together
            if len(todo) > 1:
                rec["measured_with"] = [r.name for r in todo]  # one merged decode for these runs
            A.write_json(study.layout.run(run.condition, run.seed).drift_json, rec)
            log(f"drift {run.name}: neutral-prompt trait score "
                f"{rec['neutral_prompt']['pre']['mean_score']:.3f} -> {rec['neutral_prompt']['post']['mean_score']:.3f}")
            out[run.name] = rec
        del adapters
        free_memory()
    return [out[r.name] for r in runs]


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


def _pre_post(pre: dict[str, Any], post: dict[str, Any]) -> dict[str, Any]:
    return {"pre": _brief(pre), "post": _brief(post), "drift": drift_of(pre, post)}


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("mean_score", "share_above_half", "n_unscored", "projection")
    return {k: m[k] for k in keep} | {"answers_head": m["answers"][:ANSWERS_KEPT]}
