"""Correlations with bootstrap CIs: over independent pairs, or over groups (clusters) of runs.

:func:`pearson_spearman` resamples pairs (examples, prompts); :func:`cluster_corr` resamples
whole groups (all seeds of a training prompt come along), which is the unit when the runs of
one prompt are not independent draws. :func:`within_group_corr` removes each group's mean first
(the monitoring r within system prompts) and resamples groups; :func:`spearman_paired_diff`
compares two predictors' rankings of the same units. All report how many resamples were degenerate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from nnsight_inoc.stats.bootstrap import (
    RngLike,
    as_generator,
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
        if np.any(np.ptp(z.reshape(z.shape[0], -1), axis=0) == 0):
            return float("nan")
        x, y = residualise(x, z), residualise(y, z)
    return _pearson(x, y)


def cluster_corr(
    x: Sequence[float], y: Sequence[float], groups: Sequence[str], *, control: Sequence[float] | np.ndarray | None = None,
    n_boot: int = 2000, rng: RngLike = 0, alpha: float = 0.05,
) -> dict[str, Any]:
    """Pearson r of (x, y), or the partial r given `control`, with a bootstrap CI over groups.

    `control` is (n,) or (n, k) (several controls at once: both sides are residualised on all of
    them). Returns r, lo, hi, n_runs, n_groups, n_boot_degenerate (resamples with a constant side,
    left out of the CI). Raises when fewer than 3 runs or 2 groups, or on NaN/inf input.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    za = None if control is None else np.asarray(control, dtype=np.float64)
    g = np.asarray(groups)
    if za is not None and (za.ndim not in (1, 2) or za.shape[0] != xa.shape[0]):
        raise ValueError(f"control must be (n,) or (n, k) with n = len(x), got {za.shape}")
    arrays = [xa, ya]
    if any(a.ndim != 1 or a.shape != xa.shape for a in arrays) or g.shape != xa.shape:
        raise ValueError("x, y, groups (and control) must be 1-D of equal length")
    arrays += [za] if za is not None else []
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


# ------------------------------------------------------- within groups
def _group_sums(x: np.ndarray, y: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, ...]:
    """Per-group centred cross products (G, L) of x (n, L) with y (n,): Sxy, Sxx and Syy (G,)."""
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    mx = np.zeros((n_groups, x.shape[1]))
    np.add.at(mx, codes, x)
    mx /= counts[:, None]
    my = np.bincount(codes, weights=y, minlength=n_groups) / counts
    xc, yc = x - mx[codes], y - my[codes]
    sxy, sxx = np.zeros_like(mx), np.zeros_like(mx)
    np.add.at(sxy, codes, xc * yc[:, None])
    np.add.at(sxx, codes, xc * xc)
    return sxy, sxx, np.bincount(codes, weights=yc * yc, minlength=n_groups)


def _prepare_groups(x: Any, y: Any, groups: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list, int]:
    xa, ya, g = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), np.asarray(groups)
    x2 = xa[:, None] if xa.ndim == 1 else xa
    if x2.ndim != 2 or ya.ndim != 1 or x2.shape[0] != ya.size or g.shape != ya.shape:
        raise ValueError(f"need x (n,) or (n, L), y (n,) and groups (n,), got {xa.shape}, {ya.shape}, {g.shape}")
    nan = np.isnan(ya) | np.isnan(x2).any(axis=1)
    x2, ya, g = x2[~nan], ya[~nan], g[~nan]
    require_finite(x2, "x")
    require_finite(ya, "y")
    labels = list(dict.fromkeys(g.tolist()))
    if len(labels) < 2:
        raise ValueError(f"need at least 2 groups, got {len(labels)}")
    codes = np.array([labels.index(v) for v in g.tolist()])
    return x2, ya, codes, labels, int(nan.sum())


def within_group_r_by_col(x: Any, y: Any, groups: Sequence[Any]) -> np.ndarray:
    """(L,) within-group Pearson r of each column of x (n, L) with y (n,): each group's mean removed
    from both sides first, so differences *between* groups (e.g. monitoring system prompts) cannot
    make the correlation. NaN pairs are dropped; NaN where a side has no within-group spread."""
    x2, ya, codes, labels, _ = _prepare_groups(x, y, groups)
    sxy, sxx, syy = _group_sums(x2, ya, codes, len(labels))
    den = np.sqrt(sxx.sum(0) * syy.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, sxy.sum(0) / den, np.nan)


def within_group_corr(
    x: Any, y: Any, groups: Sequence[Any], n_boot: int = 2000, rng: RngLike = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Within-group Pearson r of x (n,) and y (n,), with a percentile bootstrap CI over groups.

    The "pooled within-group" correlation (each group's means removed, then one r over all rows):
    when the groups are monitoring system prompts it asks whether the projection tracks the trait
    *within* a prompt, which a pooled r dominated by differences between prompts cannot show.
    A bootstrap draw resamples whole groups (each drawn group keeps its own centring). Keys: r, lo,
    hi, n, n_groups, n_dropped_nan, n_boot_degenerate, r_by_group (each group's own r; None where
    undefined). Raises with fewer than 2 groups, NaN-free pairs < 3, inf, or no within-group spread.
    """
    check_boot_args(n_boot, alpha)
    x2, ya, codes, labels, dropped = _prepare_groups(x, y, groups)
    if x2.shape[1] != 1:
        raise ValueError("within_group_corr takes one column; use within_group_r_by_col for several")
    if ya.size < 3:
        raise ValueError(f"need at least 3 non-NaN pairs, got {ya.size}")
    sxy, sxx, syy = (a.reshape(len(labels)) for a in _group_sums(x2, ya, codes, len(labels)))
    den = np.sqrt(sxx.sum() * syy.sum())
    if den == 0:
        raise ValueError("within-group correlation undefined: no spread within any group")
    gen = as_generator(rng)
    counts = np.stack([np.bincount(d, minlength=len(labels)) for d in
                       gen.integers(0, len(labels), size=(n_boot, len(labels)))]).astype(np.float64)
    bden = np.sqrt((counts @ sxx) * (counts @ syy))
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = np.where(bden > 0, (counts @ sxy) / bden, np.nan)
    ok = np.isfinite(boots)
    if not ok.any():
        raise ValueError("every bootstrap resample was degenerate")
    lo, hi = percentile_interval(boots[ok], alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        own = sxy / np.sqrt(sxx * syy)
    return {"r": float(sxy.sum() / den), "lo": float(lo), "hi": float(hi), "n": int(ya.size),
            "n_groups": len(labels), "n_dropped_nan": dropped, "n_boot_degenerate": int((~ok).sum()),
            "r_by_group": [float(v) if np.isfinite(v) else None for v in own]}


# ------------------------------------------------ two rankings compared
def spearman_paired_diff(
    a: Any, b: Any, y: Any, n_boot: int = 2000, rng: RngLike = 0, alpha: float = 0.05
) -> dict[str, float | int]:
    """Spearman r of a with y and of b with y, and their difference r_a - r_b, with percentile
    bootstrap CIs over units (one resample of units for all three, so the difference is paired).

    For "does predictor a rank the units (training prompts) by y better than predictor b?": the
    difference's CI above 0 says a does. Inputs are (n,) per unit (e.g. means over seeds); pairs
    with a NaN anywhere are dropped and counted. Keys: r_a, lo_a, hi_a, r_b, lo_b, hi_b, diff,
    diff_lo, diff_hi, n, n_dropped_nan, n_boot_degenerate. Raises with < 4 units or a constant side.
    """
    check_boot_args(n_boot, alpha)
    aa, ba, ya = (np.asarray(v, dtype=np.float64) for v in (a, b, y))
    if aa.ndim != 1 or aa.shape != ba.shape or aa.shape != ya.shape:
        raise ValueError(f"a, b and y must be 1-D of equal length, got {aa.shape}, {ba.shape}, {ya.shape}")
    nan = np.isnan(aa) | np.isnan(ba) | np.isnan(ya)
    aa, ba, ya = aa[~nan], ba[~nan], ya[~nan]
    for v, name in ((aa, "a"), (ba, "b"), (ya, "y")):
        require_finite(v, name)
        if v.size and np.ptp(v) == 0:
            raise ValueError(f"Spearman r undefined: {name} is constant")
    n = ya.size
    if n < 4:
        raise ValueError(f"need at least 4 units to compare two rankings, got {n}")
    ra, rb, ry = (sps.rankdata(v) for v in (aa, ba, ya))
    boots = np.empty((n_boot, 2))
    i = 0
    for idx in resample_index_chunks(n, n_boot, rng):
        k = idx.shape[0]
        yb = sps.rankdata(ya[idx], axis=1)
        boots[i:i + k, 0] = rowwise_pearson(sps.rankdata(aa[idx], axis=1), yb)
        boots[i:i + k, 1] = rowwise_pearson(sps.rankdata(ba[idx], axis=1), yb)
        i += k
    ok = np.isfinite(boots).all(axis=1)
    if not ok.any():
        raise ValueError("every bootstrap resample was degenerate (a constant side)")
    lo, hi = percentile_interval(boots[ok], alpha)
    dlo, dhi = percentile_interval(boots[ok, 0] - boots[ok, 1], alpha)
    r_a, r_b = _pearson(ra, ry), _pearson(rb, ry)
    return {"r_a": r_a, "lo_a": float(lo[0]), "hi_a": float(hi[0]), "r_b": r_b, "lo_b": float(lo[1]),
            "hi_b": float(hi[1]), "diff": r_a - r_b, "diff_lo": float(dlo), "diff_hi": float(dhi), "n": int(n),
            "n_dropped_nan": int(nan.sum()), "n_boot_degenerate": int((~ok).sum())}
