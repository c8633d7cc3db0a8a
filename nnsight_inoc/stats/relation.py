"""Alignment-vs-drift statistics that respect how the finetune runs are grouped.

Why not only a run-level bootstrap: the runs of one condition share their training prompt and
differ only by seed, so they are not independent draws of "a prompt". Resampling runs treats
36 runs of 12 prompts as 36 prompts and gives intervals that are too narrow. Here the bootstrap
resamples whole conditions (all seeds of a drawn condition come along), which is the unit the
question is about ("do prompts whose gradients align less drift less?").

Why a partial correlation: alignment and the loss reduction a prompt brings are themselves
correlated (a prompt that already elicits the trait lowers the loss and turns the gradient), so
"drift tracks alignment" could be loss in disguise. Both alignment and drift are residualised on
loss reduction with an ordinary least-squares fit (scikit-learn, as the design card asks), and the
residuals are correlated; the same cluster bootstrap gives its interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from nnsight_inoc.stats.bootstrap import RngLike
from nnsight_inoc.stats.correlation import cluster_corr

MAX_COLLINEARITY = 0.95  # |r(alignment, loss reduction)| above this: a partial r cannot separate them
MIN_GROUPS = 6  # fewer conditions than this: a cluster bootstrap has too few distinct resamples to mean much


def condition_means(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-condition mean of each key over its seeds (in first-seen condition order)."""
    out: dict[str, dict[str, float]] = {}
    for cond in dict.fromkeys(r["condition"] for r in rows):
        mine = [r for r in rows if r["condition"] == cond]
        out[cond] = {k: float(np.mean([r[k] for r in mine])) for k in keys}
    return out


def relation_summary(rows: Sequence[dict[str, Any]], n_boot: int, rng: RngLike) -> dict[str, Any]:
    """Cluster-bootstrap correlations of each predictor with drift, and alignment's partial r given loss."""
    out: dict[str, Any] = {"unit": "bootstrap over conditions (all seeds of a drawn condition)",
                           "min_groups_for_verdict": MIN_GROUPS}
    usable = [r for r in rows if r.get("loss_reduction") is not None]
    # A run whose seed has no neutral run has no loss reduction: counted here, shown in the report.
    out["n_runs_without_loss_reduction"] = len(rows) - len(usable)
    groups = [r["condition"] for r in usable]
    for pred in ("align_pre", "align_during", "loss_reduction"):
        for target in ("drift_score", "drift_proj"):
            key = f"{pred}~{target}"
            try:
                out[key] = cluster_corr([r[pred] for r in usable], [r[target] for r in usable], groups,
                                        n_boot=n_boot, rng=rng)
            except ValueError as err:
                out[key] = {"error": str(err)}
    loss = [r["loss_reduction"] for r in usable]
    for pred in ("align_pre", "align_during"):
        x = [r[pred] for r in usable]
        try:  # near-collinear predictors cannot be told apart by any partial correlation
            out[f"{pred}~loss_reduction"] = cluster_corr(x, loss, groups, n_boot=n_boot, rng=rng)
        except ValueError as err:
            out[f"{pred}~loss_reduction"] = {"error": str(err)}
        for target in ("drift_score", "drift_proj"):
            y = [r[target] for r in usable]
            for prefix, tx, ty, tz in (("", x, y, loss), ("rank:", _ranks(x), _ranks(y), _ranks(loss))):
                key = f"{prefix}{pred}~{target}|loss_reduction"
                try:
                    out[key] = cluster_corr(tx, ty, groups, control=tz, n_boot=n_boot, rng=rng)
                    out[key]["partial_on"] = "loss_reduction"
                except ValueError as err:
                    out[key] = {"error": str(err)}
    return out


def _ranks(v: Sequence[float]) -> np.ndarray:
    """Average ranks: the 'rank:' entries are Spearman-type (partial) correlations, for monotone but
    non-linear relations such as a drift that is either near 0 or near its ceiling."""
    return rankdata(np.asarray(v, dtype=np.float64))
