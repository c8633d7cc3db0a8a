"""Alignment-vs-drift statistics that respect how the finetune runs are grouped.

Why not only a run-level bootstrap: the runs of one condition share their training prompt and
differ only by seed, so they are not independent draws of "a prompt". Resampling runs treats
36 runs of 12 prompts as 36 prompts and gives intervals that are too narrow. Here the bootstrap
resamples whole conditions (all seeds of a drawn condition come along), which is the unit the
question is about ("do prompts whose gradients align less drift less?").

Why a partial correlation: alignment and the loss reduction a prompt brings are themselves
correlated (a prompt that already elicits the trait lowers the loss and turns the gradient), so
"drift tracks alignment" could be loss in disguise. Both alignment and drift are residualised on
loss reduction with an ordinary least-squares fit (:func:`~nnsight_inoc.stats.regression.residualise`), and the
residuals are correlated; the same cluster bootstrap gives its interval. Where the loss reduction
is split into a trait part and a content part (issue 16), alignment is also tested against both
parts at once (``|loss_split``), and each part is a predictor of its own.

Why rank and AUROC summaries too: drift is near 0 or near its ceiling for most prompts, which a
linear r summarises poorly. ``rank:`` entries correlate ranks; ``auroc:`` entries ask, over
training prompts, how well a predictor separates the prompts that kept at least half of the
neutral prompt's drift from those that did not (:data:`HIGH_DRIFT_SHARE`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.isotonic import IsotonicRegression

from nnsight_inoc.stats.bootstrap import RngLike, as_generator, percentile_interval
from nnsight_inoc.stats.correlation import cluster_corr, spearman_paired_diff

MAX_COLLINEARITY = 0.95  # |r(alignment, loss reduction)| above this: a partial r cannot separate them
DESIGN_MAX_COLLINEARITY = 0.5  # issue 16 item 3: the acceptance for a design whose partial r mean something
MIN_GROUPS = 6  # fewer conditions than this: a cluster bootstrap has too few distinct resamples to mean much
HIGH_DRIFT_SHARE = 0.5  # a prompt "drifted" when its mean drift is at least this share of the neutral prompt's
NEUTRAL = "neutral"
OLD_PREDICTORS = ("align_pre", "align_during", "loss_reduction")
NEW_PREDICTORS = ("loss_reduction_trait", "loss_reduction_content", "transfer")
LOSS_SPLIT = ("loss_reduction_trait", "loss_reduction_content")
PANEL_TARGET = "drift_panel_score"


def _has(rows: Sequence[dict[str, Any]], key: str) -> bool:
    return bool(rows) and all(r.get(key) is not None for r in rows)


def main_target(rows: Sequence[dict[str, Any]]) -> str:
    """The drift the verdicts use: the panel mean when every run has it, else the neutral test prompt's."""
    return PANEL_TARGET if _has(rows, PANEL_TARGET) else "drift_score"


def condition_means(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Per-condition mean of each key over its seeds (in first-seen condition order); None when a seed
    lacks the key (never the mean of a silent subset)."""
    out: dict[str, dict[str, float | None]] = {}
    for cond in dict.fromkeys(r["condition"] for r in rows):
        mine = [r for r in rows if r["condition"] == cond]
        out[cond] = {k: float(np.mean([r[k] for r in mine])) if _has(mine, k) else None for k in keys}
    return out


def _corr(rows: Sequence[dict[str, Any]], x: str, y: str, n_boot: int, rng: RngLike, *,
          control: Sequence[str] = (), rank: bool = False) -> dict[str, Any]:
    """cluster_corr over the runs that have every key; an error entry (not an exception) otherwise."""
    keys = (x, y, *control)
    use = [r for r in rows if all(r.get(k) is not None for k in keys)]
    if not use:
        return {"error": f"no run has {', '.join(keys)}"}
    f = _ranks if rank else (lambda v: np.asarray(v, dtype=np.float64))
    z = np.column_stack([f([r[k] for r in use]) for k in control]) if control else None
    try:
        out = cluster_corr(f([r[x] for r in use]), f([r[y] for r in use]), [r["condition"] for r in use],
                           control=z, n_boot=n_boot, rng=rng)
    except ValueError as err:
        return {"error": str(err)}
    if control:
        out["partial_on"] = "+".join(control)
    if len(use) < len(rows):
        out["n_runs_missing"] = len(rows) - len(use)
    return out


def relation_summary(rows: Sequence[dict[str, Any]], n_boot: int, rng: RngLike,
                     skip: Collection[str] = ()) -> dict[str, Any]:
    """Cluster-bootstrap correlations of each predictor with drift, and alignment's partial r given loss.

    Keys ``"pred~target"``, ``"pred~target|control"`` and ``"rank:..."`` are {r, lo, hi, n_runs,
    n_groups, ...} or {error}. The entries of the published runs are computed exactly as before;
    the loss split, transfer, panel drift, ``auroc:``, ``collinearity`` and ``transfer_ranking``
    entries are added when the rows carry their keys (:data:`NEW_PREDICTORS`, :data:`PANEL_TARGET`).
    Entries named in ``skip`` are not computed (a reader completing an older summary skips what it has;
    with an int ``rng`` every entry seeds its own generator, so skipping one does not change the others).
    """
    out: dict[str, Any] = {"unit": "bootstrap over conditions (all seeds of a drawn condition)",
                           "min_groups_for_verdict": MIN_GROUPS}
    usable = [r for r in rows if r.get("loss_reduction") is not None]
    # A run whose seed has no neutral run has no loss reduction: counted here, shown in the report.
    out["n_runs_without_loss_reduction"] = len(rows) - len(usable)
    targets = ["drift_score", "drift_proj"] + ([PANEL_TARGET] if _has(usable, PANEL_TARGET) else [])
    main = main_target(usable)
    out["main_target"] = main
    preds = list(OLD_PREDICTORS) + [p for p in NEW_PREDICTORS if any(r.get(p) is not None for r in usable)]
    def put(key: str, make: Callable[[], dict[str, Any]]) -> None:
        if key not in skip:
            out[key] = make()

    for pred in preds:
        for target in targets:
            put(f"{pred}~{target}", lambda: _corr(usable, pred, target, n_boot, rng))
    split = all(_has(usable, k) for k in LOSS_SPLIT)
    for pred in ("align_pre", "align_during"):
        put(f"{pred}~loss_reduction", lambda: _corr(usable, pred, "loss_reduction", n_boot, rng))
        for target in targets:
            for prefix, rank in (("", False), ("rank:", True)):
                put(f"{prefix}{pred}~{target}|loss_reduction", lambda: _corr(
                    usable, pred, target, n_boot, rng, control=("loss_reduction",), rank=rank))
                if split:
                    put(f"{prefix}{pred}~{target}|loss_split", lambda: _corr(
                        usable, pred, target, n_boot, rng, control=LOSS_SPLIT, rank=rank))
    for pred in preds:
        for target in dict.fromkeys(("drift_score", main)):
            put(f"rank:{pred}~{target}", lambda: _corr(usable, pred, target, n_boot, rng, rank=True))
            put(f"auroc:{pred}~{target}", lambda: high_drift_auroc(usable, pred, target, n_boot, rng))
    put("collinearity", lambda: collinearity(usable))
    if any(r.get("transfer") is not None for r in usable):
        put("transfer_ranking", lambda: transfer_ranking(usable, main, n_boot, rng))
    return out


def collinearity(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How far alignment and the loss reduction(s) can be told apart across the runs.

    ``r_loss_reduction``: Pearson r(align_pre, loss_reduction) over runs; ``multiple_r_loss_split``:
    the multiple correlation of align_pre on (trait part, content part) when both exist. The verdict
    cap uses :data:`MAX_COLLINEARITY`; the design acceptance (issue 16 item 3) is
    :data:`DESIGN_MAX_COLLINEARITY`, reported for both.
    """
    out: dict[str, Any] = {"cap_abs_r": MAX_COLLINEARITY, "acceptance_abs_r": DESIGN_MAX_COLLINEARITY}
    use = [r for r in rows if r.get("align_pre") is not None and r.get("loss_reduction") is not None]
    a = np.array([r["align_pre"] for r in use], dtype=np.float64)
    lr = np.array([r["loss_reduction"] for r in use], dtype=np.float64)
    out["r_loss_reduction"] = (float(np.corrcoef(a, lr)[0, 1]) if a.size >= 3 and np.ptp(a) > 0 and np.ptp(lr) > 0
                               else None)
    if use and all(_has(use, k) for k in LOSS_SPLIT):
        Z = np.column_stack([np.ones(a.size)] + [[r[k] for r in use] for k in LOSS_SPLIT])
        fit = Z @ np.linalg.lstsq(Z, a, rcond=None)[0]
        ss = float(np.sum((a - a.mean()) ** 2))
        out["multiple_r_loss_split"] = float(np.sqrt(max(0.0, 1 - np.sum((a - fit) ** 2) / ss))) if ss > 0 else None
    worst = max((abs(v) for k, v in out.items() if k in ("r_loss_reduction", "multiple_r_loss_split")
                 and v is not None), default=None)
    out["max_abs_r"] = worst
    out["meets_acceptance"] = None if worst is None else bool(worst <= DESIGN_MAX_COLLINEARITY)
    return out


def _auc(x: np.ndarray, high: np.ndarray) -> float:
    """P(x of a high-drift unit > x of a low-drift one), ties 1/2 (Mann-Whitney); NaN with one class."""
    n1, n0 = int(high.sum()), int((~high).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(x)
    return float((ranks[high].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def high_drift_auroc(rows: Sequence[dict[str, Any]], pred: str, target: str, n_boot: int, rng: RngLike,
                     alpha: float = 0.05) -> dict[str, Any]:
    """AUROC of a predictor for "this training prompt drifted", over condition means, with a bootstrap
    CI over conditions.

    A prompt drifted when its mean drift (``target``) is at least :data:`HIGH_DRIFT_SHARE` of the
    neutral condition's; 0.5 = no separation, above 0.5 = higher predictor, more drift. Keys: auroc,
    lo, hi, threshold, n_high, n_low, n_groups, n_boot_degenerate (draws with one class), or {error}.
    """
    means = condition_means(rows, (pred, target))
    if NEUTRAL not in means or means[NEUTRAL][target] is None:
        return {"error": f"no {NEUTRAL} runs: the high-drift threshold is a share of the neutral prompt's drift"}
    units = [c for c, m in means.items() if m[pred] is not None and m[target] is not None]
    x = np.array([means[c][pred] for c in units], dtype=np.float64)
    threshold = HIGH_DRIFT_SHARE * float(means[NEUTRAL][target])
    high = np.array([means[c][target] >= threshold for c in units])
    est = _auc(x, high)
    if est != est:
        return {"error": f"every prompt is on one side of the high-drift threshold {threshold:+.3f}",
                "threshold": threshold}
    gen = as_generator(rng)
    boots = np.array([_auc(x[i], high[i]) for i in gen.integers(0, len(units), size=(n_boot, len(units)))])
    ok = np.isfinite(boots)
    lo, hi = percentile_interval(boots[ok], alpha) if ok.any() else (np.nan, np.nan)
    return {"auroc": est, "lo": float(lo), "hi": float(hi), "threshold": threshold, "n_high": int(high.sum()),
            "n_low": int((~high).sum()), "n_groups": len(units), "n_boot_degenerate": int((~ok).sum())}


def transfer_ranking(rows: Sequence[dict[str, Any]], target: str, n_boot: int, rng: RngLike) -> dict[str, Any]:
    """Does cross-context transfer rank the training prompts by drift better than alignment does?

    Over condition means (one unit per training prompt): Spearman r of transfer and of align_pre with
    ``target``, and their paired difference, CIs from one bootstrap over prompts
    (:func:`~nnsight_inoc.stats.correlation.spearman_paired_diff`); {error} when not computable.
    """
    means = condition_means(rows, ("transfer", "align_pre", target))
    units = [c for c, m in means.items() if all(v is not None for v in m.values())]
    try:
        res = spearman_paired_diff([means[c]["transfer"] for c in units], [means[c]["align_pre"] for c in units],
                                   [means[c][target] for c in units], n_boot=n_boot, rng=rng)
    except ValueError as err:
        return {"error": str(err), "target": target}
    return {"target": target, "a": "transfer", "b": "align_pre", **res}


def monotone_fit(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray, bool]:
    """Isotonic least-squares fit of y on x (scikit-learn), increasing or decreasing as Spearman's sign
    says: the fitted *shape* of a relation that is a step rather than a line. Returns (x sorted, fitted
    y, increasing). Raises with fewer than 2 finite pairs."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    if ok.sum() < 2:
        raise ValueError("a monotone fit needs at least 2 finite pairs")
    xa, ya = xa[ok], ya[ok]
    rx, ry = rankdata(xa), rankdata(ya)
    increasing = bool(np.ptp(rx) == 0 or np.ptp(ry) == 0 or np.corrcoef(rx, ry)[0, 1] >= 0)
    order = np.argsort(xa, kind="stable")
    fit = IsotonicRegression(increasing=increasing).fit(xa[order], ya[order]).predict(xa[order])
    return xa[order], fit, increasing


def _ranks(v: Sequence[float]) -> np.ndarray:
    """Average ranks: the 'rank:' entries are Spearman-type (partial) correlations, for monotone but
    non-linear relations such as a drift that is either near 0 or near its ceiling."""
    return rankdata(np.asarray(v, dtype=np.float64))
