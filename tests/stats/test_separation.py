"""AUROC and Cohen's d against references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from nnsight_inoc.stats.separation import auroc, cohens_d


def test_auroc_and_cohens_d() -> None:
    assert auroc([2.0, 3.0, 4.0], [0.0, 1.0]) == 1.0
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert auroc([1.0, 1.0, 1.0], [1.0, 1.0]) == 0.5
    rng = np.random.default_rng(8)
    pos, neg = rng.normal(0.5, 1.0, 20_000), rng.normal(0.0, 1.0, 20_000)
    assert cohens_d(pos, neg) == pytest.approx(0.5, abs=0.03)
    assert cohens_d(neg, pos) == pytest.approx(-cohens_d(pos, neg))
    # AUROC of shifted unit normals = Phi(d / sqrt 2)
    assert auroc(pos, neg) == pytest.approx(sps.norm.cdf(0.5 / np.sqrt(2)), abs=0.01)


def test_separation_errors() -> None:
    for f in (auroc, cohens_d):
        with pytest.raises(ValueError, match="empty"):
            f([], [1.0, 2.0])
        with pytest.raises(ValueError, match="empty"):
            f([1.0, 2.0], [])
        with pytest.raises(ValueError, match="non-finite"):
            f([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="zero variance"):
        cohens_d([1.0, 1.0], [2.0, 2.0])
