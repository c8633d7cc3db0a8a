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


# ---- the loss split, transfer, panel drift, rank and AUROC summaries -----------------------------
from scipy.stats import rankdata as _rankdata  # noqa: E402
from sklearn.isotonic import IsotonicRegression  # noqa: E402

from nnsight_inoc.stats.intervals import panel_intervals  # noqa: E402
from nnsight_inoc.stats.relation import (  # noqa: E402
    collinearity,
    high_drift_auroc,
    main_target,
    monotone_fit,
    transfer_ranking,
)


def _split_rows(seed: int = 4, n_groups: int = 8, per: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_groups):
        c = "neutral" if i == 0 else f"c{i}"
        trait, content, align = rng.normal(), rng.normal(), rng.normal()
        transfer = align + 0.1 * rng.normal()
        for s in range(per):
            drift = 1.0 if i == 0 else float(0.9 / (1 + np.exp(-3 * align)) + 0.02 * rng.normal())
            rows.append({"condition": c, "seed": s, "align_pre": align + 0.01 * rng.normal(), "align_during": align,
                         "loss_reduction": trait + content, "loss_reduction_trait": trait,
                         "loss_reduction_content": content, "transfer": transfer, "drift_score": drift,
                         "drift_proj": drift, "drift_panel_score": drift + 0.01})
    return rows


def test_new_predictors_and_panel_target_appear_with_their_keys():
    rows = _split_rows()
    rel = relation_summary(rows, n_boot=50, rng=0)
    assert rel["main_target"] == "drift_panel_score" == main_target(rows)
    for key in ("loss_reduction_trait~drift_panel_score", "transfer~drift_score", "rank:transfer~drift_panel_score",
                "align_pre~drift_panel_score|loss_split", "rank:align_pre~drift_score|loss_split",
                "auroc:align_pre~drift_panel_score", "collinearity", "transfer_ranking"):
        assert key in rel and "error" not in rel[key], key
    x = np.array([r["align_pre"] for r in rows])
    y = np.array([r["drift_panel_score"] for r in rows])
    Z = np.column_stack([[r[k] for r in rows] for k in ("loss_reduction_trait", "loss_reduction_content")])
    ref = cluster_corr(x, y, [r["condition"] for r in rows], control=Z, n_boot=50, rng=0)
    assert rel["align_pre~drift_panel_score|loss_split"]["r"] == pytest.approx(ref["r"])
    assert rel["align_pre~drift_panel_score|loss_split"]["partial_on"] == "loss_reduction_trait+loss_reduction_content"
    old = [{k: v for k, v in r.items() if k in ("condition", "seed", "align_pre", "align_during", "loss_reduction",
                                                "drift_score", "drift_proj")} for r in rows]
    rel_old = relation_summary(old, n_boot=50, rng=0)
    assert rel_old["main_target"] == "drift_score" and "transfer_ranking" not in rel_old
    assert not any("loss_split" in k or "transfer" in k or "panel" in k for k in rel_old)


def test_high_drift_auroc_against_a_rank_reference():
    rows = _split_rows(seed=5)
    out = high_drift_auroc(rows, "align_pre", "drift_score", n_boot=200, rng=0)
    means = condition_means(rows, ("align_pre", "drift_score"))
    thr = 0.5 * means["neutral"]["drift_score"]
    x = np.array([m["align_pre"] for m in means.values()])
    hi = np.array([m["drift_score"] >= thr for m in means.values()])
    pairs = [(a > b) + 0.5 * (a == b) for a in x[hi] for b in x[~hi]]
    assert out["auroc"] == pytest.approx(np.mean(pairs)) and out["threshold"] == pytest.approx(thr)
    assert out["n_high"] == int(hi.sum()) and out["lo"] <= out["auroc"] <= out["hi"]
    no_neutral = [r for r in rows if r["condition"] != "neutral"]
    assert "error" in high_drift_auroc(no_neutral, "align_pre", "drift_score", n_boot=10, rng=0)


def test_collinearity_and_its_acceptance():
    rows = _split_rows(seed=6)
    col = collinearity(rows)
    a = np.array([r["align_pre"] for r in rows])
    lr = np.array([r["loss_reduction"] for r in rows])
    assert col["r_loss_reduction"] == pytest.approx(np.corrcoef(a, lr)[0, 1])
    Z = np.column_stack([np.ones(a.size), [r["loss_reduction_trait"] for r in rows],
                         [r["loss_reduction_content"] for r in rows]])
    fit = Z @ np.linalg.lstsq(Z, a, rcond=None)[0]
    assert col["multiple_r_loss_split"] == pytest.approx(np.corrcoef(fit, a)[0, 1])
    assert col["meets_acceptance"] == (col["max_abs_r"] <= 0.5)
    for r in rows:
        r["loss_reduction"] = -r["align_pre"]  # perfectly collinear
    assert collinearity(rows)["meets_acceptance"] is False


def test_transfer_ranking_prefers_the_better_predictor():
    rows = _split_rows(seed=7, n_groups=12)
    for r in rows:  # transfer tracks drift's ordering; alignment is shuffled noise
        r["transfer"], r["align_pre"] = r["drift_score"], float(np.sin(17.0 * r["drift_score"]))
    out = transfer_ranking(rows, "drift_score", n_boot=500, rng=0)
    assert out["r_a"] == pytest.approx(1.0) and out["diff"] > 0 and out["diff_lo"] > 0
    assert "error" in transfer_ranking(rows[:9], "drift_score", n_boot=10, rng=0)  # 3 prompts only


def test_monotone_fit_is_sklearn_isotonic_in_spearmans_direction():
    x = np.array([0.3, 0.1, 0.2, 0.5, 0.4])
    y = np.array([0.9, 0.0, 0.1, 0.8, 0.95])
    xs, fit, inc = monotone_fit(x, y)
    ref = IsotonicRegression(increasing=True).fit(x, y).predict(np.sort(x))
    assert inc and np.allclose(fit, ref) and np.all(np.diff(xs) >= 0)
    _, fit_dec, inc_dec = monotone_fit(x, -y)
    assert not inc_dec and np.allclose(fit_dec, -ref)
    assert _rankdata(fit).size == 5


def test_panel_intervals_pair_cells_and_require_one_panel():
    rows = []
    for s in range(3):
        for c, base in (("neutral", 0.9), ("inoc", 0.1)):
            rows.append({"condition": c, "seed": s,
                         "drift_panel_by_prompt": {f"p{k}": base + 0.01 * k + 0.02 * s for k in range(5)}})
    out = panel_intervals(rows, [("inoc", "neutral")], n_boot=200, rng=0)
    assert out["prompts"] == [f"p{k}" for k in range(5)]
    n = out["by_condition"]["neutral"]
    assert n["mean"] == pytest.approx(0.9 + 0.02 + 0.02) and n["n_rows"] == 3 and n["n_cols"] == 5
    c = out["contrasts"]["inoc-neutral"]
    assert c["mean"] == pytest.approx(-0.8) and c["lo"] == pytest.approx(-0.8) and c["hi"] == pytest.approx(-0.8)
    rows[0]["drift_panel_by_prompt"].pop("p0")
    with pytest.raises(ValueError, match="same panel"):
        panel_intervals(rows, [("inoc", "neutral")], n_boot=10)
