"""Percentile bootstrap CIs over examples, with resampling shared across columns.

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
* A table measured over two crossed factors (finetune seeds x panel test prompts) is
  resampled over both at once (:func:`crossed_bootstrap_mean`).

The other statistics have one home each in this package: multiple testing
(:mod:`.multiple`), separation (:mod:`.separation`), correlations (:mod:`.correlation`),
regression and residualisation (:mod:`.regression`), random-direction nulls
(:mod:`.nulls`), intervals over seeds (:mod:`.intervals`), per-seed pairing and the exact
sign-flip test (:mod:`.pairing`), and the drift relation (:mod:`.relation`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

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


def check_boot_args(n_boot: int, alpha: float) -> None:
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
    check_boot_args(n_boot, alpha)
    arr = _as_rows(x, "x", ndim=2)
    boots = bootstrap_col_means(arr, n_boot, rng)
    lo, hi = percentile_interval(boots, alpha)
    return arr.mean(axis=0), lo, hi


def paired_bootstrap_diff_by_col(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, rng: RngLike = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean diff, lo, hi, p) per column for paired (n, L) arrays: row i of a and b is
    the same example under two conditions, so indices are resampled once for both."""
    check_boot_args(n_boot, alpha)
    a_arr = _as_rows(a, "a", ndim=2)
    b_arr = _as_rows(b, "b", ndim=2)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired inputs must have equal shapes, got {a_arr.shape} vs {b_arr.shape}")
    diff = a_arr - b_arr
    boots = bootstrap_col_means(diff, n_boot, rng)
    lo, hi = percentile_interval(boots, alpha)
    return diff.mean(axis=0), lo, hi, bootstrap_p_two_sided(boots)


def crossed_bootstrap_mean(
    x: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, rng: RngLike = 0
) -> dict[str, float | int]:
    """Mean of a crossed table x (S, K), e.g. seeds x panel test prompts, with a CI over both factors.

    Rows and columns are resampled independently and the whole table follows (the "pigeonhole"
    bootstrap of Owen 2007, Ann. Appl. Stat. 1:386-411, for crossed random effects): one draw is
    ``mean(x[rows][:, cols])``. Both the seed-to-seed and the prompt-to-prompt spread enter the
    interval; Owen shows it is mildly conservative (the interaction is counted twice). With S = 1
    the interval is over columns only, with K = 1 over rows only; ``n_rows``/``n_cols`` say which.
    With 3 seeds the row resampling has only 10 distinct outcomes, so read the interval as
    approximate. Keys: mean, lo, hi, p_boot (two-sided, :func:`bootstrap_p_two_sided`), n_rows,
    n_cols, n_boot. Raises on NaN/inf, a non-2-D table, or a 1 x 1 table (no spread to resample).
    """
    check_boot_args(n_boot, alpha)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"x must be a non-empty 2-D table (rows x columns), got shape {arr.shape}")
    if arr.shape == (1, 1):
        raise ValueError("a 1 x 1 table has no spread to resample")
    require_finite(arr, "x")
    s, k = arr.shape
    gen = as_generator(rng)
    boots = np.empty(n_boot)
    chunk = max(1, min(n_boot, _MAX_INDEX_CELLS // max(s * k, 1)))
    done = 0
    while done < n_boot:
        m = min(chunk, n_boot - done)
        rc = np.stack([np.bincount(r, minlength=s) for r in gen.integers(0, s, size=(m, s))]).astype(np.float64)
        cc = np.stack([np.bincount(c, minlength=k) for c in gen.integers(0, k, size=(m, k))]).astype(np.float64)
        boots[done:done + m] = np.einsum("bs,sk,bk->b", rc, arr, cc) / (s * k)
        done += m
    lo, hi = percentile_interval(boots, alpha)
    return {"mean": float(arr.mean()), "lo": float(lo), "hi": float(hi),
            "p_boot": float(bootstrap_p_two_sided(boots[:, None])[0]),
            "n_rows": int(s), "n_cols": int(k), "n_boot": int(n_boot)}
