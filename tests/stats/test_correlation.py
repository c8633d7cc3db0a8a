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


# ---- within groups and two rankings compared ---------------------------------------------------
from nnsight_inoc.stats.correlation import (  # noqa: E402
    cluster_corr,
    spearman_paired_diff,
    within_group_corr,
    within_group_r_by_col,
)


def _between_not_within(seed: int = 0, n_groups: int = 6, per: int = 40):
    """Group means move x and y together; within a group x and y are independent."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    level = np.repeat(np.linspace(-3, 3, n_groups), per)
    return level + rng.normal(size=g.size), level + rng.normal(size=g.size), g


def test_within_group_r_removes_between_group_differences() -> None:
    x, y, g = _between_not_within()
    pooled = np.corrcoef(x, y)[0, 1]
    out = within_group_corr(x, y, g, n_boot=1000, rng=0)
    xc = x - np.array([x[g == k].mean() for k in g])
    yc = y - np.array([y[g == k].mean() for k in g])
    assert out["r"] == pytest.approx(np.corrcoef(xc, yc)[0, 1])
    assert pooled > 0.8 and abs(out["r"]) < 0.2 and out["lo"] < 0 < out["hi"]
    assert out["n_groups"] == 6 and out["n"] == 240 and len(out["r_by_group"]) == 6
    assert out["r_by_group"][0] == pytest.approx(np.corrcoef(x[g == 0], y[g == 0])[0, 1])


def test_within_group_r_sees_a_real_within_relation_and_drops_nan() -> None:
    x, _, g = _between_not_within(seed=1)
    y = 0.8 * (x - np.repeat([x[g == k].mean() for k in range(6)], 40)) + 0.3 * np.random.default_rng(2).normal(size=240)
    y[[0, 5]] = np.nan
    out = within_group_corr(x, y, g, n_boot=500, rng=0)
    assert out["lo"] > 0.8 and out["n_dropped_nan"] == 2
    by_col = within_group_r_by_col(np.column_stack([x, -x]), y, g)
    assert by_col[0] == pytest.approx(out["r"]) and by_col[1] == pytest.approx(-out["r"])


def test_within_group_errors() -> None:
    with pytest.raises(ValueError, match="2 groups"):
        within_group_corr([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], ["a", "a", "a"])
    with pytest.raises(ValueError, match="no spread"):
        within_group_corr([1.0, 1.0, 2.0, 2.0], [1.0, 3.0, 2.0, 5.0], ["a", "a", "b", "b"])


def test_spearman_paired_diff_against_scipy() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(size=16)
    good = y + 0.1 * rng.normal(size=16)
    noise = rng.normal(size=16)
    out = spearman_paired_diff(good, noise, y, n_boot=1000, rng=0)
    assert out["r_a"] == pytest.approx(sps.spearmanr(good, y).statistic)
    assert out["r_b"] == pytest.approx(sps.spearmanr(noise, y).statistic)
    assert out["diff"] == pytest.approx(out["r_a"] - out["r_b"])
    assert out["diff_lo"] > 0 and out["lo_a"] <= out["r_a"] <= out["hi_a"]
    with pytest.raises(ValueError, match="at least 4"):
        spearman_paired_diff([1.0, 2.0, 3.0], [3.0, 1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="constant"):
        spearman_paired_diff([1.0] * 5, [3.0, 1.0, 2.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])


def test_cluster_corr_with_two_controls_equals_residualising_on_both() -> None:
    rng = np.random.default_rng(6)
    z1, z2 = rng.normal(size=30), rng.normal(size=30)
    x = z1 + 0.5 * rng.normal(size=30)
    y = z2 + x + rng.normal(size=30)
    g = np.repeat([f"c{i}" for i in range(10)], 3)
    Z = np.column_stack([z1, z2])
    out = cluster_corr(x, y, g, control=Z, n_boot=100)
    Z1 = np.column_stack([np.ones(30), Z])
    rx = x - Z1 @ np.linalg.lstsq(Z1, x, rcond=None)[0]
    ry = y - Z1 @ np.linalg.lstsq(Z1, y, rcond=None)[0]
    assert out["r"] == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    with pytest.raises(ValueError, match="control must be"):
        cluster_corr(x, y, g, control=Z[:-1])
