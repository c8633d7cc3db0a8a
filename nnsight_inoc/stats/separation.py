"""How well a scalar separates two groups: AUROC and Cohen's d (direction checks of v)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from nnsight_inoc.stats.bootstrap import require_finite


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
