"""Stages `finetune` and `drift`: LoRA per condition x seed, then persona drift, then
"does alignment predict drift?".

Each (condition, seed) run is resumable: a finished run has ``train.json`` (written last
by :func:`finetune.train_lora`) and, after `drift`, ``drift.json``; both are skipped when
present. Drift is measured under the neutral test prompt (does the trait leak out?) and
under the run's own training prompt (did the trait become conditional on that prompt?).
"""

from __future__ import annotations

import gc
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
from .drift import measure_behaviour
from .extract import load_direction
from .finetune import TRAIN_JSON, load_trained, run_name, train_lora
from .progress import log
from .stats import pearson_spearman
from .steering import SteerSpec, same_steering, steer_specs
from .study import Study, ensure_sft

FINETUNE_DIR = "finetune"
PRE_JSON = "pre.json"
DRIFT_JSON = "drift.json"
SUMMARY_JSON = "finetune_summary.json"


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


def _direction(study: Study) -> torch.Tensor:
    v_all, _ = load_direction(study)
    return v_all[:, POSITIONS.index(study.cfg.align.direction_position)]


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_finetune(study: Study, which: str = "all") -> list[dict[str, Any]]:
    """Train every (condition, seed) not yet trained; returns their train summaries."""
    t0 = time.time()
    v, sft = _direction(study), ensure_sft(study)
    out_dir = study.run_dir / FINETUNE_DIR
    done = []
    specs = steering_specs(study) if which == "steering" else {}
    for cond, system in training_conditions(study, which).items():
        steer = specs.get(cond)
        for seed in study.cfg.finetune.seeds:
            path = out_dir / run_name(cond, seed) / TRAIN_JSON
            if path.is_file():
                rec = A.read_json(path)
                if rec["finetune_config"] != study.cfg.finetune.model_dump() or rec["system_prompt"] != system:
                    raise ValueError(f"{path} was trained with another config or prompt; use a new --run-dir")
                if not same_steering(rec.get("steering"), steer):
                    raise ValueError(f"{path} was trained with other steering; use a new --run-dir")
                log(f"finetune {run_name(cond, seed)}: already trained, reusing")
                done.append(rec)
                continue
            train_lora(study, cond, system, sft, seed, v, out_dir, steer=steer)
            done.append(A.read_json(path))
            _free()
    study.prov.stage(f"finetune_{which}", time.time() - t0, runs=len(done))
    return done


def _pre(study: Study, system: str, prompts: list[str], v: torch.Tensor) -> dict[str, Any]:
    """Base-model behaviour under one system prompt, cached in finetune/pre.json."""
    path = study.run_dir / FINETUNE_DIR / PRE_JSON
    cache = A.read_json(path) if path.is_file() else {}
    if system not in cache or cache[system]["prompts"] != prompts:
        cache[system] = measure_behaviour(study, study.loaded.hf_model, system, prompts, v)
        A.write_json(path, cache)
    return cache[system]


def run_drift(study: Study, which: str = "all") -> dict[str, Any]:
    """Pre vs post behaviour and projection for every trained run, then the summary."""
    t0 = time.time()
    v = _direction(study)
    prompts = [p.text for p in study.splits.eval[: study.cfg.finetune.n_drift_prompts]]
    neutral = study.cfg.align.conditions["neutral"]
    out_dir = study.run_dir / FINETUNE_DIR
    for cond, system in training_conditions(study, which).items():
        for seed in study.cfg.finetune.seeds:
            folder = out_dir / run_name(cond, seed)
            if not (folder / TRAIN_JSON).is_file():
                raise FileNotFoundError(f"{folder / TRAIN_JSON}: run `finetune` first")
            if (folder / DRIFT_JSON).is_file():
                if A.read_json(folder / DRIFT_JSON)["n_prompts"] != len(prompts):
                    raise ValueError(f"{folder / DRIFT_JSON} used another number of prompts; use a new --run-dir")
                continue
            model = load_trained(study, folder)
            rec: dict[str, Any] = {"condition": cond, "seed": seed, "n_prompts": len(prompts)}
            for label, sys_prompt in (("neutral_prompt", neutral), ("training_prompt", system)):
                pre = _pre(study, sys_prompt, prompts, v)
                post = measure_behaviour(study, model, sys_prompt, prompts, v)
                rec[label] = {"pre": _brief(pre), "post": _brief(post), "drift": drift_of(pre, post)}
            A.write_json(folder / DRIFT_JSON, rec)
            log(f"drift {run_name(cond, seed)}: neutral-prompt trait score "
                f"{rec['neutral_prompt']['pre']['mean_score']:.3f} -> {rec['neutral_prompt']['post']['mean_score']:.3f}")
            del model
            _free()
    summary = summarise_drift(study, which)
    study.prov.stage(f"drift_{which}", time.time() - t0)
    return summary


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("mean_score", "share_above_half", "n_unscored", "projection")
    return {k: m[k] for k in keep} | {"answers_head": m["answers"][:5]}


def _rows(study: Study, which: str, layer: int) -> list[dict[str, Any]]:
    out_dir = study.run_dir / FINETUNE_DIR
    rows = []
    for cond in training_conditions(study, which):
        for seed in study.cfg.finetune.seeds:
            folder = out_dir / run_name(cond, seed)
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
    return rows


def summarise_drift(study: Study, which: str) -> dict[str, Any]:
    """Per-run table, per-condition means, and alignment (and loss) vs drift correlations."""
    _, meta = load_direction(study)
    layer = int(meta["layer"])
    rows = _rows(study, which, layer)
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
    summary = {
        "layer": layer,
        "position": "a_sum",
        "n_runs": len(rows),
        "sign_note": "alignment = mean cos(-g, v) on the probe set; drift = post - pre under the neutral test prompt",
        "rows": [{k: v for k, v in r.items() if k != "drift_proj_by_layer"} for r in rows],
        "correlations": corr,
    }
    out_dir = study.run_dir / FINETUNE_DIR
    A.write_json(out_dir / SUMMARY_JSON, summary)
    _plots(out_dir, rows, layer, corr)
    return summary


def _plots(out_dir: Path, rows: list[dict[str, Any]], layer: int, corr: dict[str, Any]) -> None:
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    curves = {}
    for c in conds:
        x = np.array([r["drift_proj_by_layer"] for r in rows if r["condition"] == c])  # (seeds, L)
        lo, hi = (x.min(0), x.max(0)) if len(x) > 1 else (x[0], x[0])
        curves[c] = (x.mean(0), lo, hi)
    plots.curves_with_ci(out_dir / "projection_shift_vs_layer.png", curves, "post - pre projection onto v",
                         "drift in the final-prompt projection under the neutral prompt (band: min-max over seeds)")
    plots.pre_post_bars(out_dir / "trait_pre_post.png",
                        {c: ([r["pre_score"] for r in rows if r["condition"] == c],
                             [r["post_score"] for r in rows if r["condition"] == c]) for c in conds})
    plots.scatter_fit(out_dir / "alignment_vs_drift.png", [r["align_pre"] for r in rows],
                      [r["drift_score"] for r in rows], [r["condition"] for r in rows],
                      f"mean cos(-g, v) before training (layer {layer}, a_sum)", "drift in trait score (neutral prompt)",
                      corr.get("align_pre~drift_score", {}))
