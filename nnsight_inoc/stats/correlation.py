"""Correlations with bootstrap CIs: over independent pairs, or over groups (clusters) of runs.

:func:`pearson_spearman` resamples pairs (examples, prompts); :func:`cluster_corr` resamples
whole groups (all seeds of a training prompt come along), which is the unit when the runs of
one prompt are not independent draws. Both report how many resamples were degenerate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from nnsight_inoc.stats.bootstrap import (
    RngLike,
    check_boot_args,
    percentile_interval,
    require_finite,
    resample_index_chunks,
)
from nnsight_inoc.stats.regression import residualise


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _stat(x: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> float:
    if z is not None:
        if np.ptp(z) == 0:
            return float("nan")
        x, y = residualise(x, z), residualise(y, z)
    return _pearson(x, y)


def cluster_corr(
    x: Sequence[float], y: Sequence[float], groups: Sequence[str], *, control: Sequence[float] | None = None,
    n_boot: int = 2000, rng: RngLike = 0, alpha: float = 0.05,
) -> dict[str, Any]:
    """Pearson r of (x, y), or the partial r given `control`, with a bootstrap CI over groups.

    Returns r, lo, hi, n_runs, n_groups, n_boot_degenerate (resamples with a constant side,
    left out of the CI). Raises when fewer than 3 runs or 2 groups, or on NaN/inf input.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    za = None if control is None else np.asarray(control, dtype=np.float64)
    g = np.asarray(groups)
    arrays = [xa, ya] + ([za] if za is not None else [])
    if any(a.ndim != 1 or a.shape != xa.shape for a in arrays) or g.shape != xa.shape:
        raise ValueError("x, y, groups (and control) must be 1-D of equal length")
    if any(not np.isfinite(a).all() for a in arrays):
        raise ValueError("x, y and control must be finite")
    labels = list(dict.fromkeys(g.tolist()))
    if xa.size < 3 or len(labels) < 2:
        raise ValueError(f"need at least 3 runs in 2 groups, got {xa.size} runs in {len(labels)}")
    r = _stat(xa, ya, za)
    if r != r:
        raise ValueError("correlation undefined: a side is constant")
    members = [np.flatnonzero(g == lab) for lab in labels]
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([members[i] for i in gen.integers(0, len(labels), len(labels))])
        boots[b] = _stat(xa[idx], ya[idx], None if za is None else za[idx])
    ok = np.isfinite(boots)
    if not ok.any():
        raise ValueError("every bootstrap resample was degenerate")
    lo, hi = percentile_interval(boots[ok], alpha)
    return {"r": r, "lo": float(lo), "hi": float(hi), "n_runs": int(xa.size), "n_groups": len(labels),
            "n_boot_degenerate": int((~ok).sum()), "partial_on": None if control is None else "control"}


# ------------------------------------------------------------- correlation
def rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (k, n) arrays; NaN where a row is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(xc * xc, axis=1) * np.sum(yc * yc, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sum(xc * yc, axis=1) / denom
    return np.where(denom > 0, r, np.nan)


def pearson_spearman(
    x: Any, y: Any, n_boot: int = 2000, rng: RngLike = 0, alpha: float = 0.05
) -> dict[str, float | int]:
    """Pearson and Spearman correlation with scipy p-values and pair-bootstrap CIs.

    Pairs with a NaN in x or y are dropped and counted (``n_dropped_nan``); inf raises.
    Keys: pearson_r, pearson_p, pearson_lo, pearson_hi, spearman_r, spearman_p,
    spearman_lo, spearman_hi, n (pairs used), n_dropped_nan, n_boot_degenerate
    (resamples with a constant side, excluded from the CIs).
    """
    check_boot_args(n_boot, alpha)
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got {xa.shape} and {ya.shape}")
    nan = np.isnan(xa) | np.isnan(ya)
    xa, ya = xa[~nan], ya[~nan]
    require_finite(xa, "x")
    require_finite(ya, "y")
    n = xa.size
    if n < 3:
        raise ValueError(f"need at least 3 non-NaN pairs, got {n}")
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        raise ValueError("correlation undefined: x or y is constant")
    pr = sps.pearsonr(xa, ya)
    sr = sps.spearmanr(xa, ya)
    pb, sb = np.empty(n_boot), np.empty(n_boot)
    i = 0
    for idx in resample_index_chunks(n, n_boot, rng):
        xb, yb = xa[idx], ya[idx]
        k = idx.shape[0]
        pb[i:i + k] = rowwise_pearson(xb, yb)
        sb[i:i + k] = rowwise_pearson(sps.rankdata(xb, axis=1), sps.rankdata(yb, axis=1))
        i += k
    ok = np.isfinite(pb) & np.isfinite(sb)
    if not ok.any():
        raise ValueError("every bootstrap resample was degenerate (constant x or y)")
    p_lo, p_hi = percentile_interval(pb[ok], alpha)
    s_lo, s_hi = percentile_interval(sb[ok], alpha)
    return {
        "pearson_r": float(pr.statistic), "pearson_p": float(pr.pvalue),
        "pearson_lo": float(p_lo), "pearson_hi": float(p_hi),
        "spearman_r": float(sr.statistic), "spearman_p": float(sr.pvalue),
        "spearman_lo": float(s_lo), "spearman_hi": float(s_hi),
        "n": int(n), "n_dropped_nan": int(nan.sum()),
        "n_boot_degenerate": int((~ok).sum()),
    }
