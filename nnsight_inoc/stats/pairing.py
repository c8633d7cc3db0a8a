"""Per-seed pairing of finetune runs: the one definition of "condition a minus condition b, seed by seed",
and the exact sign-flip test over those paired differences.

Runs of one seed share their batches, step order and LoRA initialisation; only the training
prompt differs. Differences are therefore taken within a seed, which cancels the seed-to-seed
noise, and a seed missing on either side is left out (never imputed).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from nnsight_inoc.stats.intervals import mean_ci


def by_seed(rows: Sequence[Mapping[str, Any]], cond: str, key: str) -> dict[int, float]:
    """seed -> value of one per-run quantity for one condition (runs lacking the value are absent)."""
    return {int(r["seed"]): float(r[key]) for r in rows if r["condition"] == cond and r.get(key) is not None}


def paired_diffs(rows: Sequence[Mapping[str, Any]], a: str, b: str, key: str) -> tuple[list[int], list[float]]:
    """(seeds, a - b per seed) over the seeds both conditions have, in seed order."""
    xa, xb = by_seed(rows, a, key), by_seed(rows, b, key)
    seeds = sorted(set(xa) & set(xb))
    return seeds, [xa[s] - xb[s] for s in seeds]


def paired_mean_ci(rows: Sequence[Mapping[str, Any]], a: str, b: str, key: str) -> tuple[float, float, float, int]:
    """Mean [t-interval] over seeds of a - b for one per-run quantity (see :func:`.intervals.mean_ci`)."""
    return mean_ci(paired_diffs(rows, a, b, key)[1])


MAX_SIGN_FLIP_N = 20  # 2^20 sign patterns: beyond this, enumerate no more (use the t-interval)


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Exact two-sided sign-flip (paired permutation) p for "mean difference = 0".

    Under the null each paired difference is as likely to have either sign, so all 2^n sign
    patterns are equally likely; p is the share whose |mean| is at least the observed |mean|
    (Fisher's randomisation test for paired data). The smallest attainable p is 2 / 2^n: 0.25 at
    n = 3 seeds, so at 3 seeds no pattern of signs, however consistent, is significant at 0.05;
    the verdicts therefore use a paired interval and report this p only as description.
    Raises on an empty input, NaN/inf, or n > :data:`MAX_SIGN_FLIP_N`.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"need a non-empty 1-D list of paired differences, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("paired differences must be finite")
    if d.size > MAX_SIGN_FLIP_N:
        raise ValueError(f"{d.size} pairs: exact enumeration is limited to {MAX_SIGN_FLIP_N}")
    signs = 1 - 2 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)  # (2^n, n) of +-1
    means = np.abs(signs @ d) / d.size
    observed = abs(d.mean())
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def min_sign_flip_p(n: int) -> float:
    """The smallest p :func:`sign_flip_p` can return with n pairs: 2 / 2^n (1 when n = 0)."""
    return 1.0 if n < 1 else min(1.0, 2.0 / 2 ** n)
