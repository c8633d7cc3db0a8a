"""Stages `finetune` and `drift`: LoRA per condition x seed, then persona drift, then
"does alignment predict drift?".

Each (condition, seed) run is resumable: a finished run has ``train.json`` (written last
by :func:`finetune.train_lora`) and, after `drift`, ``drift.json``; both are skipped when
present. Drift is measured under the neutral test prompt (does the trait leak out?) and
under the run's own training prompt (did the trait become conditional on that prompt?).
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import artifacts as A
from . import plots
from .align import LOSSMATCH
from .directions import POSITIONS
from .drift import drift as drift_of
from .drift_stats import condition_means, relation_summary
from .drift import measure_behaviour
from .extract import load_direction
from .finetune import ADAPTER_DIR, TRAIN_JSON, load_trained, run_name, train_lora
from .progress import log
from .stats import pearson_spearman
from .steering import SteerSpec, same_steering, steer_specs
from .study import Study, ensure_sft

FINETUNE_DIR = "finetune"
PRE_DIR = "pre"
DRIFT_JSON = "drift.json"
SUMMARY_JSON = "finetune_summary.json"
STEERING_SUMMARY_JSON = "steering_summary.json"


def summary_name(which: str) -> str:
    """Steering runs get their own summary: mixing them into the prompt conditions' alignment-drift
    correlation would pool two interventions, and a steering summary must not overwrite the
    prompt-condition one (a run folder holds both)."""
    return STEERING_SUMMARY_JSON if which == "steering" else SUMMARY_JSON


def training_conditions(study: Study, which: str) -> dict[str, str]:
    """Main conditions (incl. the loss-matched prompt if `align` chose one) and/or wording variants.

    ``steering``: the main conditions (the baselines it is compared with) plus every
    preventative-steering condition of ``[steering]``, each trained under the neutral prompt.
    """
    if which not in ("main", "variants", "all", "steering"):
        raise ValueError(f"which must be main, variants, all or steering, not {which!r}")
    out: dict[str, str] = {}
    if which in ("main", "all", "steering"):
        out.update(study.cfg.align.conditions)
        lm = study.run_dir / A.ALIGN_DIR / A.LOSSMATCH
        if lm.is_file():
            out[LOSSMATCH] = A.read_json(lm)["chosen_prompt"]
        else:
            log("finetune: no align/lossmatch.json yet, so the loss-matched condition is not trained")
    if which in ("variants", "all"):
        clash = [n for n, _ in study.trait.variants if n in out]
        if clash:
            raise ValueError(f"variant names clash with condition names: {clash}")
        out.update(dict(study.trait.variants))
    if which == "steering":
        specs = steering_specs(study)
        clash = [n for n in specs if n in out]
        if clash:
            raise ValueError(f"steering condition names clash with condition names: {clash}")
        out.update({n: study.cfg.align.conditions["neutral"] for n in specs})
    if not out:
        raise ValueError(f"no training conditions for which={which!r} (the trait defines no variants?)")
    return out


def steering_specs(study: Study) -> dict[str, SteerSpec]:
    """The preventative-steering conditions of this study's config, layers checked against its model."""
    return steer_specs(study.cfg.steering, study.tlm.n_layers)


def training_direction(study: Study) -> torch.Tensor:
    """v(l) at the position the align stage reports on: what probes and drift project onto."""
    v_all, _ = load_direction(study)
    return v_all[:, POSITIONS.index(study.cfg.align.direction_position)]


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_trained(study: Study, train_json: Path, system: str, steer: SteerSpec | None = None) -> dict[str, Any]:
    """A finished run's record, refusing one trained with another config, prompt or steering."""
    rec = A.read_json(train_json)
    if rec["finetune_config"] != study.cfg.finetune.model_dump() or rec["system_prompt"] != system:
        raise ValueError(f"{train_json} was trained with another config or prompt; use a new --run-dir")
    if not same_steering(rec.get("steering"), steer):
        raise ValueError(f"{train_json} was trained with other steering; use a new --run-dir")
    return rec


def needs_training(folder: Path) -> bool:
    """A run must be trained unless it has train.json and, for its drift still to come, its adapter.

    Why the second part: published run folders keep train.json and drift.json but no adapter (37 MB
    each). A run published between training and drift (a GPU session that ran out of time) has only
    train.json, and its drift can never be measured from it, so it is trained again.
    """
    if not (folder / TRAIN_JSON).is_file():
        return True
    return not (folder / DRIFT_JSON).is_file() and not (folder / ADAPTER_DIR).is_dir()


def run_finetune(study: Study, which: str = "all") -> list[dict[str, Any]]:
    """Train every (condition, seed) not yet trained; returns their train summaries."""
    t0 = time.time()
    v, sft = training_direction(study), ensure_sft(study)
    out_dir = study.run_dir / FINETUNE_DIR
    done = []
    specs = steering_specs(study) if which == "steering" else {}
    for cond, system in training_conditions(study, which).items():
        steer = specs.get(cond)
        for seed in study.cfg.finetune.seeds:
            path = out_dir / run_name(cond, seed) / TRAIN_JSON
            if not needs_training(path.parent):
                done.append(check_trained(study, path, system, steer))
                log(f"finetune {run_name(cond, seed)}: already trained, reusing")
                continue
            if path.is_file():
                log(f"finetune {run_name(cond, seed)}: train.json without its adapter or drift.json, training again")
            train_lora(study, cond, system, sft, seed, v, out_dir, steer=steer)
            done.append(A.read_json(path))
            _free()
    study.prov.stage(f"finetune_{which}", time.time() - t0, runs=len(done))
    return done


def _pre(study: Study, system: str, prompts: list[str], v: torch.Tensor) -> dict[str, Any]:
    """Base-model behaviour under one system prompt, cached in finetune/pre/<hash>.json.

    One file per prompt (not one shared file) so parallel workers never overwrite each
    other's entries; two workers computing the same entry write the same content atomically.
    """
    key = hashlib.sha256(json.dumps([system, prompts]).encode()).hexdigest()[:16]
    path = study.run_dir / FINETUNE_DIR / PRE_DIR / f"{key}.json"
    if path.is_file():
        rec = A.read_json(path)
        if rec["system"] == system and rec["prompts"] == prompts:
            return rec["behaviour"]
    behaviour = measure_behaviour(study, study.loaded.hf_model, system, prompts, v)
    A.write_json(path, {"system": system, "prompts": prompts, "behaviour": behaviour})
    return behaviour


def drift_prompts(study: Study) -> list[str]:
    return [p.text for p in study.splits.eval[: study.cfg.finetune.n_drift_prompts]]


def drift_one(study: Study, cond: str, system: str, seed: int, v: torch.Tensor, prompts: list[str]) -> dict[str, Any]:
    """Pre vs post for one trained run; writes (and returns) its drift.json, skipping a finished one."""
    folder = study.run_dir / FINETUNE_DIR / run_name(cond, seed)
    if not (folder / TRAIN_JSON).is_file():
        raise FileNotFoundError(f"{folder / TRAIN_JSON}: run `finetune` first")
    if (folder / DRIFT_JSON).is_file():
        rec = A.read_json(folder / DRIFT_JSON)
        if rec["n_prompts"] != len(prompts):
            raise ValueError(f"{folder / DRIFT_JSON} used another number of prompts; use a new --run-dir")
        return rec
    neutral = study.cfg.align.conditions["neutral"]
    t0 = time.time()
    model = load_trained(study, folder)
    rec: dict[str, Any] = {"condition": cond, "seed": seed, "n_prompts": len(prompts)}
    for label, sys_prompt in (("neutral_prompt", neutral), ("training_prompt", system)):
        pre = _pre(study, sys_prompt, prompts, v)
        post = measure_behaviour(study, model, sys_prompt, prompts, v)
        rec[label] = {"pre": _brief(pre), "post": _brief(post), "drift": drift_of(pre, post)}
    rec["wall_s"] = time.time() - t0  # pre measurements come from the cache after the first run
    A.write_json(folder / DRIFT_JSON, rec)
    log(f"drift {run_name(cond, seed)}: neutral-prompt trait score "
        f"{rec['neutral_prompt']['pre']['mean_score']:.3f} -> {rec['neutral_prompt']['post']['mean_score']:.3f}")
    del model
    _free()
    return rec


def run_drift(study: Study, which: str = "all") -> dict[str, Any]:
    """Pre vs post behaviour and projection for every trained run, then the summary."""
    t0 = time.time()
    v = training_direction(study)
    prompts = drift_prompts(study)
    for cond, system in training_conditions(study, which).items():
        for seed in study.cfg.finetune.seeds:
            drift_one(study, cond, system, seed, v, prompts)
    summary = summarise_drift(study, which)
    study.prov.stage(f"drift_{which}", time.time() - t0)
    return summary


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("mean_score", "share_above_half", "n_unscored", "projection")
    return {k: m[k] for k in keep} | {"answers_head": m["answers"][:5]}


def _rows(study: Study, which: str, layer: int, partial: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per finished run; with `partial`, runs without drift.json are listed, not an error."""
    out_dir = study.run_dir / FINETUNE_DIR
    rows, missing = [], []
    for cond in training_conditions(study, which):
        for seed in study.cfg.finetune.seeds:
            folder = out_dir / run_name(cond, seed)
            if partial and not (folder / DRIFT_JSON).is_file():
                missing.append(run_name(cond, seed))
                continue
            tr, dr = A.read_json(folder / TRAIN_JSON), A.read_json(folder / DRIFT_JSON)
            cos = np.array([p["cos"] for p in tr["probes"]])  # (n_probe_steps, L, P)
            j = tr["positions"].index("a_sum")
            rows.append({
                "condition": cond, "seed": seed,
                "align_pre": float(cos[0, layer, j]),
                "align_during": float(cos[:, layer, j].mean()),
                "probe_loss_pre": float(tr["probes"][0]["loss"]),
                "drift_score": float(dr["neutral_prompt"]["drift"]["mean_score"]),
                "drift_share": float(dr["neutral_prompt"]["drift"]["share_above_half"]),
                "drift_proj": float(dr["neutral_prompt"]["drift"]["projection"][layer]),
                "drift_proj_by_layer": dr["neutral_prompt"]["drift"]["projection"],
                "train_prompt_post_score": float(dr["training_prompt"]["post"]["mean_score"]),
                "pre_score": float(dr["neutral_prompt"]["pre"]["mean_score"]),
                "steering": tr.get("steering"),
                "post_score": float(dr["neutral_prompt"]["post"]["mean_score"]),
            })
    return rows, missing


def summarise_drift(study: Study, which: str, partial: bool = False) -> dict[str, Any]:
    """Per-run table, per-condition means, and alignment (and loss) vs drift correlations.

    `partial` summarises the finished runs when a campaign ran out of time, and lists the
    runs that were not run in the summary (the report prints them): nothing is silently dropped.
    """
    _, meta = load_direction(study)
    layer = int(meta["layer"])
    rows, missing = _rows(study, which, layer, partial)
    if not rows:
        raise FileNotFoundError(f"no finished runs (drift.json) under {study.run_dir / FINETUNE_DIR}")
    neutral_loss = {r["seed"]: r["probe_loss_pre"] for r in rows if r["condition"] == "neutral"}
    for r in rows:  # the simpler predictor: how much the training prompt itself lowers the loss
        r["loss_reduction"] = (neutral_loss[r["seed"]] - r["probe_loss_pre"]) if r["seed"] in neutral_loss else None
    corr: dict[str, Any] = {}
    n_boot = study.cfg.align.n_bootstrap
    for pred in ("align_pre", "align_during", "loss_reduction"):
        x = np.array([np.nan if r[pred] is None else r[pred] for r in rows], dtype=float)
        for target in ("drift_score", "drift_proj"):
            y = np.array([r[target] for r in rows], dtype=float)
            try:
                corr[f"{pred}~{target}"] = pearson_spearman(x, y, n_boot=n_boot, rng=study.cfg.seed)
            except ValueError as err:  # too few runs or constant values: reported, not hidden
                corr[f"{pred}~{target}"] = {"error": str(err), "n": int(np.isfinite(x).sum())}
    relation = relation_summary(rows, n_boot, study.cfg.seed)
    summary = {
        "layer": layer,
        "position": "a_sum",
        "which": which,
        "n_runs": len(rows),
        "not_run": missing,
        "sign_note": "alignment = mean cos(-g, v) on the probe set; drift = post - pre under the neutral test prompt",
        "rows": [{k: v for k, v in r.items() if k != "drift_proj_by_layer"} for r in rows],
        "correlations": corr,  # runs as independent pairs; `relation` resamples conditions (see drift_stats)
        "relation": relation,
        "condition_means": condition_means(rows, ("align_pre", "align_during", "probe_loss_pre", "drift_score",
                                                  "drift_proj", "train_prompt_post_score", "post_score")),
    }
    out_dir = study.run_dir / FINETUNE_DIR
    A.write_json(out_dir / summary_name(which), summary)
    _plots(out_dir, rows, layer, corr, prefix="steering_" if which == "steering" else "")
    return summary


def _plots(out_dir: Path, rows: list[dict[str, Any]], layer: int, corr: dict[str, Any], prefix: str = "") -> None:
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    curves = {}
    for c in conds:
        x = np.array([r["drift_proj_by_layer"] for r in rows if r["condition"] == c])  # (seeds, L)
        lo, hi = (x.min(0), x.max(0)) if len(x) > 1 else (x[0], x[0])
        curves[c] = (x.mean(0), lo, hi)
    plots.curves_with_ci(out_dir / f"{prefix}projection_shift_vs_layer.png", curves, "post - pre projection onto v",
                         "drift in the final-prompt projection under the neutral prompt (band: min-max over seeds)")
    plots.pre_post_bars(out_dir / f"{prefix}trait_pre_post.png",
                        {c: ([r["pre_score"] for r in rows if r["condition"] == c],
                             [r["post_score"] for r in rows if r["condition"] == c]) for c in conds})
    plots.scatter_fit(out_dir / f"{prefix}alignment_vs_drift.png", [r["align_pre"] for r in rows],
                      [r["drift_score"] for r in rows], [r["condition"] for r in rows],
                      f"mean cos(-g, v) before training (layer {layer}, a_sum)", "drift in trait score (neutral prompt)",
                      corr.get("align_pre~drift_score", {}))
