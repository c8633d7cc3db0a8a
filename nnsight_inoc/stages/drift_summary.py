"""The drift summary: one row per finished run, per-condition means, and "does alignment predict drift?".

Reads only the runs' ``train.json`` and ``drift.json`` (so it also runs on published results
without adapters), writes ``finetune/finetune_summary.json`` (``steering_summary.json`` for the
steering sweep) and its plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import NEUTRAL_CONDITION
from nnsight_inoc.core.schema import DriftRecord, TrainRecord, read_checked
from nnsight_inoc.report import plots
from nnsight_inoc.stages.plan import training_conditions
from nnsight_inoc.stats.correlation import pearson_spearman
from nnsight_inoc.stats.relation import condition_means, relation_summary
from nnsight_inoc.study import Study, load_directions


def _rows(study: Study, which: str, layer: int, partial: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per finished run; with `partial`, runs without drift.json are listed, not an error."""
    rows, missing = [], []
    for cond in training_conditions(study, which):
        for seed in study.cfg.finetune.seeds:
            files = study.layout.run(cond, seed)
            if partial and not files.drift_json.is_file():
                missing.append(files.folder.name)
                continue
            tr, dr = read_checked(files.train_json, TrainRecord), read_checked(files.drift_json, DriftRecord)
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
    _, meta = load_directions(study)
    layer = int(meta["layer"])
    rows, missing = _rows(study, which, layer, partial)
    if not rows:
        raise FileNotFoundError(f"no finished runs (drift.json) under {study.layout.finetune_dir}")
    neutral_loss = {r["seed"]: r["probe_loss_pre"] for r in rows if r["condition"] == NEUTRAL_CONDITION}
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
        "correlations": corr,  # runs as independent pairs; `relation` resamples conditions (see stats.relation)
        "relation": relation,
        "condition_means": condition_means(rows, ("align_pre", "align_during", "probe_loss_pre", "drift_score",
                                                  "drift_proj", "train_prompt_post_score", "post_score")),
    }
    steering = which == "steering"
    A.write_json(study.layout.summary(steering), summary)
    _plots(study.layout.drift_plots(steering), rows, layer, corr)
    return summary


def _plots(paths: tuple[Path, ...], rows: list[dict[str, Any]], layer: int, corr: dict[str, Any]) -> None:
    """The three drift plots, written to ``paths`` (projection shift, trait pre/post, alignment vs drift)."""
    shift_png, pre_post_png, align_png = paths
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    curves = {}
    for c in conds:
        x = np.array([r["drift_proj_by_layer"] for r in rows if r["condition"] == c])  # (seeds, L)
        lo, hi = (x.min(0), x.max(0)) if len(x) > 1 else (x[0], x[0])
        curves[c] = (x.mean(0), lo, hi)
    plots.curves_with_ci(shift_png, curves, "post - pre projection onto v",
                         "drift in the final-prompt projection under the neutral prompt (band: min-max over seeds)")
    plots.pre_post_bars(pre_post_png,
                        {c: ([r["pre_score"] for r in rows if r["condition"] == c],
                             [r["post_score"] for r in rows if r["condition"] == c]) for c in conds})
    plots.scatter_fit(align_png, [r["align_pre"] for r in rows],
                      [r["drift_score"] for r in rows], [r["condition"] for r in rows],
                      f"mean cos(-g, v) before training (layer {layer}, a_sum)", "drift in trait score (neutral prompt)",
                      corr.get("align_pre~drift_score", {}))
