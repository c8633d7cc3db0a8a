"""Pearson/Spearman with pair-bootstrap CIs: values, NaN handling, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from nnsight_inoc.stats.correlation import pearson_spearman


def test_pearson_spearman_values_and_nan_handling() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=300)
    y = 0.6 * x + 0.8 * rng.normal(size=300)
    xn, yn = x.copy(), y.copy()
    xn[[3, 10]] = np.nan
    yn[[10, 50, 51]] = np.nan  # 4 distinct pairs touched
    out = pearson_spearman(xn, yn, n_boot=1000, rng=0)
    keep = ~(np.isnan(xn) | np.isnan(yn))
    assert out["n"] == 296 and out["n_dropped_nan"] == 4
    ref_p, ref_s = sps.pearsonr(x[keep], y[keep]), sps.spearmanr(x[keep], y[keep])
    assert out["pearson_r"] == pytest.approx(ref_p.statistic)
    assert out["pearson_p"] == pytest.approx(ref_p.pvalue)
    assert out["spearman_r"] == pytest.approx(ref_s.statistic)
    assert out["pearson_lo"] < 0.6 < out["pearson_hi"]
    assert out["spearman_lo"] < out["spearman_r"] < out["spearman_hi"]
    assert np.isfinite([v for v in out.values()]).all()


def test_pearson_spearman_errors() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        pearson_spearman([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="constant"):
        pearson_spearman([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="non-finite"):
        pearson_spearman([1.0, np.inf, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
