"""Cluster-bootstrap and partial correlations of alignment vs drift, against plain references."""

from __future__ import annotations

import numpy as np
import pytest

from nnsight_inoc.stats.correlation import cluster_corr, pearson_spearman
from nnsight_inoc.stats.regression import residualise
from nnsight_inoc.stats.relation import condition_means, relation_summary


def _data(seed: int = 0, n_groups: int = 8, per: int = 3):
    rng = np.random.default_rng(seed)
    z = np.repeat(rng.normal(size=n_groups), per)
    x = z + np.repeat(rng.normal(size=n_groups), per) + 0.05 * rng.normal(size=n_groups * per)
    y = 2 * z + 0.5 * x + np.repeat(rng.normal(size=n_groups), per) + 0.05 * rng.normal(size=n_groups * per)
    groups = np.repeat([f"c{i}" for i in range(n_groups)], per)
    return x, y, z, groups


def test_point_estimates_match_references():
    x, y, z, g = _data()
    res = cluster_corr(x, y, g, n_boot=200)
    assert res["r"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert res["n_runs"] == 24 and res["n_groups"] == 8
    rxy, rxz, ryz = np.corrcoef(x, y)[0, 1], np.corrcoef(x, z)[0, 1], np.corrcoef(y, z)[0, 1]
    textbook = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
    part = cluster_corr(x, y, g, control=z, n_boot=200)
    assert part["r"] == pytest.approx(textbook, abs=1e-10)
    assert abs(part["r"] - res["r"]) > 0.05  # controlling for z really changes the estimate here
    assert part["lo"] <= part["r"] <= part["hi"]


def test_residualise_removes_the_linear_part():
    rng = np.random.default_rng(1)
    z = rng.normal(size=50)
    y = 3 * z + 1 + rng.normal(size=50)
    r = residualise(y, z)
    assert abs(np.corrcoef(r, z)[0, 1]) < 1e-10 and abs(r.mean()) < 1e-10


def test_cluster_interval_is_wider_than_run_level_when_seeds_repeat():
    """Three near-copies per condition: resampling runs overstates n, resampling conditions does not."""
    x, y, _, g = _data(seed=3, n_groups=8, per=3)
    clustered = cluster_corr(x, y, g, n_boot=2000, rng=0)
    runs = pearson_spearman(x, y, n_boot=2000, rng=0)
    assert (clustered["hi"] - clustered["lo"]) > 1.3 * (runs["pearson_hi"] - runs["pearson_lo"])


def test_bad_inputs_raise():
    x, y, z, g = _data()
    with pytest.raises(ValueError, match="2 groups"):
        cluster_corr(x, y, ["one"] * len(x))
    with pytest.raises(ValueError, match="finite"):
        cluster_corr(np.r_[x[:-1], np.nan], y, g)
    with pytest.raises(ValueError, match="constant"):
        cluster_corr(np.ones_like(x), y, g)
    with pytest.raises(ValueError, match="equal length"):
        cluster_corr(x[:-1], y, g)


def test_relation_summary_and_condition_means():
    x, y, z, g = _data()
    rows = [{"condition": c, "align_pre": a, "align_during": a / 2, "loss_reduction": l, "drift_score": d,
             "drift_proj": 10 * d} for c, a, l, d in zip(g, x, z, y)]
    rel = relation_summary(rows, n_boot=100, rng=0)
    assert rel["align_pre~drift_score"]["r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert rel["align_pre~drift_score|loss_reduction"]["partial_on"] == "loss_reduction"
    means = condition_means(rows, ("drift_score",))
    assert list(means) == [f"c{i}" for i in range(8)]
    assert means["c0"]["drift_score"] == pytest.approx(y[:3].mean())


def test_rank_partial_and_collinearity_entries():
    x, y, z, g = _data()
    rows = [{"condition": c, "align_pre": a, "align_during": a, "loss_reduction": l, "drift_score": d,
             "drift_proj": d} for c, a, l, d in zip(g, x, z, y)]
    rel = relation_summary(rows, n_boot=50, rng=0)
    assert rel["align_pre~loss_reduction"]["r"] == pytest.approx(np.corrcoef(x, z)[0, 1])
    from scipy.stats import rankdata

    ref = cluster_corr(rankdata(x), rankdata(y), g, control=rankdata(z), n_boot=50)
    assert rel["rank:align_pre~drift_score|loss_reduction"]["r"] == pytest.approx(ref["r"])
