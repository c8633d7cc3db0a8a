"""Statistics for the inoculation-gradient study: bootstrap CIs, multiple testing,
separation and correlation.

Why it looks like this:

* Every CI is a percentile bootstrap over *examples* (rows). Per-example gradient
  alignments are far from normal (bounded cosines, heavy tails at small loss), so
  we avoid t-intervals.
* The same examples are measured under every system prompt, so condition contrasts
  are *paired*: `paired_bootstrap_diff` resamples example indices once and applies
  them to both conditions. Between-example variance then cancels, which an
  unpaired test cannot do.
* Per-layer curves are bootstrapped with one resampling matrix shared by all layers
  (`bootstrap_mean_ci_by_col`), so the whole curve is a consistent draw and the cost
  is one matrix product instead of a Python loop per layer.
* NaNs are never averaged over silently: functions either raise on them or drop
  them and report how many they dropped.

The regression control, random-direction null and cosine helpers live in
`nnsight_inoc.controls_stats` (the file split keeps both modules short); they are
re-exported here lazily so `from nnsight_inoc.stats import X` works for the whole API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

RngLike = np.random.Generator | int

# Cap on cells (bootstrap draws x rows) of one resampling-index chunk, so memory
# stays ~tens of MB whatever n and n_boot are.
_MAX_INDEX_CELLS = 4_000_000


# ----------------------------------------------------------------- helpers
def as_generator(rng: RngLike) -> np.random.Generator:
    """Return a Generator; only a Generator or an int seed is accepted so every
    result is reproducible (``None`` would silently draw fresh OS entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def require_finite(arr: np.ndarray, name: str) -> None:
    """Raise if ``arr`` holds NaN/inf: callers must drop them and report the count."""
    n_bad = int(np.count_nonzero(~np.isfinite(arr)))
    if n_bad:
        raise ValueError(
            f"{name} has {n_bad} non-finite value(s) (NaN/inf); drop them explicitly "
            "and report how many, they are never averaged over silently"
        )


def _check_boot_args(n_boot: int, alpha: float) -> None:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _as_rows(x: Any, name: str, ndim: int, min_rows: int = 2) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {arr.shape[0]}")
    require_finite(arr, name)
    return arr


def resample_index_chunks(n: int, n_boot: int, rng: RngLike) -> Iterator[np.ndarray]:
    """Yield bootstrap index matrices (k, n) with sum of k == n_boot, in chunks that
    bound memory. Every statistic of one draw uses the same row of indices."""
    gen = as_generator(rng)
    chunk = max(1, min(n_boot, _MAX_INDEX_CELLS // max(n, 1)))
    done = 0
    while done < n_boot:
        k = min(chunk, n_boot - done)
        yield gen.integers(0, n, size=(k, n))
        done += k


def resample_count_chunks(n: int, n_boot: int, rng: RngLike) -> Iterator[np.ndarray]:
    """Like `resample_index_chunks` but yields (k, n) float counts: how often each
    unit was drawn. A resampled mean is then ``counts @ x / n`` and a cluster
    bootstrap becomes a weighted fit (duplicated rows == integer weights)."""
    for idx in resample_index_chunks(n, n_boot, rng):
        k = idx.shape[0]
        flat = (idx + n * np.arange(k)[:, None]).ravel()
        yield np.bincount(flat, minlength=k * n).reshape(k, n).astype(np.float64)


def percentile_interval(boots: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI along axis 0 of a (n_boot, ...) array of bootstrap statistics."""
    lo, hi = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    return lo, hi


def bootstrap_p_two_sided(boots: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p for "statistic == 0": 2*min(share<=0, share>=0), clipped
    to [1/n_boot, 1] (a finite bootstrap cannot certify p below 1/n_boot)."""
    n_boot = boots.shape[0]
    share = np.minimum(np.mean(boots <= 0, axis=0), np.mean(boots >= 0, axis=0))
    return np.clip(2.0 * share, 1.0 / n_boot, 1.0)


# --------------------------------------------------------------- bootstrap
def bootstrap_ci(
    x: np.ndarray,
    stat: Callable[[np.ndarray], Any] = np.mean,
    n_boot: int = 2000,
    alpha: float = 0.05,
    rng: RngLike = 0,
    axis: int = 0,
) -> tuple[float, float, float]:
    """(estimate, lo, hi): percentile bootstrap of a scalar ``stat`` resampling
    ``x`` along ``axis`` (rows = examples). ``stat`` gets arrays in x's orientation.
    For per-layer means use `bootstrap_mean_ci_by_col` (vectorised)."""
    _check_boot_args(n_boot, alpha)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[axis] < 2:
        raise ValueError(f"x needs at least 2 rows along axis {axis}, got shape {arr.shape}")
    require_finite(arr, "x")
    est = _scalar(stat(arr), "stat(x)")
    boots = np.empty(n_boot)
    i = 0
    for idx in resample_index_chunks(arr.shape[axis], n_boot, rng):
        for row in idx:
            boots[i] = _scalar(stat(np.take(arr, row, axis=axis)), "stat(resample)")
            i += 1
    lo, hi = percentile_interval(boots, alpha)
    return est, float(lo), float(hi)


def _scalar(value: Any, what: str) -> float:
    if np.ndim(value) != 0:
        raise ValueError(f"{what} must be a scalar, got shape {np.shape(value)}; "
                         "use bootstrap_mean_ci_by_col for per-column statistics")
    out = float(value)
    if not np.isfinite(out):
        raise ValueError(f"{what} is not finite ({out})")
    return out


def bootstrap_col_means(x: np.ndarray, n_boot: int = 2000, rng: RngLike = 0) -> np.ndarray:
    """(n_boot, L) bootstrap means of every column of x (n, L), one index matrix
    shared by all columns (a draw resamples whole examples across layers)."""
    arr = _as_rows(x, "x", ndim=2)
    n = arr.shape[0]
    out = np.empty((n_boot, arr.shape[1]))
    i = 0
    for counts in resample_count_chunks(n, n_boot, rng):
        out[i:i + counts.shape[0]] = counts @ arr / n
        i += counts.shape[0]
    return out


def bootstrap_mean_ci_by_col(
    x: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, rng: RngLike = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(est (L,), lo (L,), hi (L,)) percentile CIs of column means of x (n, L)."""
    _check_boot_args(n_boot, alpha)
    arr = _as_rows(x, "x", ndim=2)
    boots = bootstrap_col_means(arr, n_boot, rng)
    lo, hi = percentile_interval(boots, alpha)
    return arr.mean(axis=0), lo, hi


def paired_bootstrap_diff_by_col(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, rng: RngLike = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean diff, lo, hi, p) per column for paired (n, L) arrays: row i of a and b is
    the same example under two conditions, so indices are resampled once for both."""
    _check_boot_args(n_boot, alpha)
    a_arr = _as_rows(a, "a", ndim=2)
    b_arr = _as_rows(b, "b", ndim=2)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired inputs must have equal shapes, got {a_arr.shape} vs {b_arr.shape}")
    diff = a_arr - b_arr
    boots = bootstrap_col_means(diff, n_boot, rng)
    lo, hi = percentile_interval(boots, alpha)
    return diff.mean(axis=0), lo, hi, bootstrap_p_two_sided(boots)


def paired_bootstrap_diff(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, rng: RngLike = 0
) -> tuple[float, float, float, float]:
    """(mean(a - b), lo, hi, two-sided bootstrap p) for paired 1-D samples."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or b_arr.ndim != 1:
        raise ValueError("paired_bootstrap_diff takes 1-D inputs; use paired_bootstrap_diff_by_col")
    d, lo, hi, p = paired_bootstrap_diff_by_col(a_arr[:, None], b_arr[:, None], n_boot, alpha, rng)
    return float(d[0]), float(lo[0]), float(hi[0]), float(p[0])


# -------------------------------------------------------- multiple testing
def _pvals(pvals: Any) -> np.ndarray:
    p = np.asarray(pvals, dtype=np.float64)
    if p.size == 0:
        raise ValueError("pvals is empty")
    require_finite(p, "pvals")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("pvals must lie in [0, 1]")
    return p


def holm(pvals: Any) -> np.ndarray:
    """Holm step-down adjusted p-values (FWER), same shape as input, monotone in p
    and clipped at 1. Use for the few headline tests (e.g. one per model)."""
    p = _pvals(pvals)
    flat = p.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    adj_sorted = np.maximum.accumulate((m - np.arange(m)) * flat[order])
    out = np.empty(m)
    out[order] = np.minimum(adj_sorted, 1.0)
    return out.reshape(p.shape)


def benjamini_hochberg(pvals: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (FDR), same shape, monotone, clipped at 1.
    Use for the many per-layer tests where some false discoveries are tolerable."""
    p = _pvals(pvals)
    flat = p.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    scaled = flat[order] * m / np.arange(1, m + 1)
    adj_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj_sorted, 1.0)
    return out.reshape(p.shape)


# -------------------------------------------------------------- separation
def _group(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"group {name!r} is empty")
    require_finite(arr, name)
    return arr


def auroc(pos: Any, neg: Any) -> float:
    """P(score_pos > score_neg) (ties count 1/2): how well a score separates trait
    from non-trait examples, independent of scale."""
    p, n = _group(pos, "pos"), _group(neg, "neg")
    labels = np.r_[np.ones(p.size), np.zeros(n.size)]
    return float(roc_auc_score(labels, np.r_[p, n]))


def cohens_d(pos: Any, neg: Any) -> float:
    """(mean_pos - mean_neg) / pooled SD (ddof=1 per group): effect size in SD units."""
    p, n = _group(pos, "pos"), _group(neg, "neg")
    dof = p.size + n.size - 2
    if dof < 1:
        raise ValueError("cohens_d needs at least 3 values in total")
    ss = np.sum((p - p.mean()) ** 2) + np.sum((n - n.mean()) ** 2)
    pooled = np.sqrt(ss / dof)
    if pooled == 0:
        raise ValueError("cohens_d undefined: both groups have zero variance")
    return float((p.mean() - n.mean()) / pooled)


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
    _check_boot_args(n_boot, alpha)
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


# ------------------------------------------------ lazy re-export of controls
_CONTROLS = (
    "random_unit_directions", "null_p_value", "cosine_rows", "nan_row_count",
    "residualise", "condition_effect_regression",
)


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562) so controls_stats can import this module without a cycle.
    if name in _CONTROLS:
        from nnsight_inoc import controls_stats

        return getattr(controls_stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "as_generator", "require_finite", "resample_index_chunks", "resample_count_chunks",
    "percentile_interval", "bootstrap_p_two_sided", "bootstrap_ci", "bootstrap_col_means",
    "bootstrap_mean_ci_by_col", "paired_bootstrap_diff", "paired_bootstrap_diff_by_col",
    "holm", "benjamini_hochberg", "auroc", "cohens_d", "rowwise_pearson", "pearson_spearman",
    *_CONTROLS,
]
