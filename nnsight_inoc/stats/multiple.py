"""Multiple-testing corrections: Holm (family-wise) and Benjamini-Hochberg (false discovery rate)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nnsight_inoc.stats.bootstrap import require_finite


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
