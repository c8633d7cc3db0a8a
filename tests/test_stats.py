"""Numerical checks of nnsight_inoc.stats / controls_stats against simple references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.linear_model import LinearRegression

from nnsight_inoc import stats as S
from nnsight_inoc.controls_stats import weighted_ols_batch, weighted_partial_r_batch


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_covers_true_mean_and_shrinks_like_sqrt_n() -> None:
    rng = np.random.default_rng(1)
    big = rng.normal(3.0, 2.0, size=10_000)
    est, lo, hi = S.bootstrap_ci(big, rng=0)
    assert lo < 3.0 < hi and lo < est < hi
    assert est == pytest.approx(big.mean())
    # half-width ~ 1.96 * sd / sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(1.96 * 2.0 / 100, rel=0.1)
    _, lo4, hi4 = S.bootstrap_ci(big[:2500], rng=0)
    assert (hi4 - lo4) / (hi - lo) == pytest.approx(2.0, rel=0.15)


def test_bootstrap_ci_axis_and_custom_stat() -> None:
    x = np.random.default_rng(2).normal(size=(3, 400))
    est, lo, hi = S.bootstrap_ci(x, stat=lambda a: np.median(a[0]), axis=1, n_boot=500)
    assert est == pytest.approx(np.median(x[0]))
    assert lo <= est <= hi
    with pytest.raises(ValueError, match="scalar"):
        S.bootstrap_ci(x, stat=lambda a: a.mean(axis=1), axis=1, n_boot=10)


def test_by_col_matches_scalar_bootstrap_and_has_nominal_coverage() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 400))  # 400 independent "layers" with true mean 0
    est, lo, hi = S.bootstrap_mean_ci_by_col(x, n_boot=2000, rng=7)
    assert est.shape == lo.shape == hi.shape == (400,)
    coverage = np.mean((lo < 0) & (hi > 0))
    assert 0.88 <= coverage <= 0.99
    # same seed -> same index matrix -> the scalar path gives the same column-0 CI
    _, lo0, hi0 = S.bootstrap_ci(x[:, 0], rng=7)
    assert (lo0, hi0) == pytest.approx((lo[0], hi[0]))


def test_bootstrap_rejects_nan_and_bad_args() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        S.bootstrap_ci(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="non-finite"):
        S.bootstrap_mean_ci_by_col(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        S.bootstrap_ci(np.array([1.0]))
    with pytest.raises(TypeError, match="rng"):
        S.bootstrap_ci(np.arange(5.0), rng=None)  # type: ignore[arg-type]


def test_paired_bootstrap_detects_shift_unpaired_misses() -> None:
    rng = np.random.default_rng(4)
    n = 60
    per_example = rng.normal(0, 5.0, size=n)  # large between-example variance
    b = per_example + rng.normal(0, 0.3, size=n)
    a = per_example + 0.3 + rng.normal(0, 0.3, size=n)
    d, lo, hi, p = S.paired_bootstrap_diff(a, b, n_boot=2000, rng=0)
    assert d == pytest.approx(np.mean(a - b))
    assert 0 < lo < 0.3 < hi
    assert p == pytest.approx(1 / 2000)  # every draw > 0 -> clipped at 1/n_boot
    assert sps.ttest_ind(a, b).pvalue > 0.5  # the unpaired test sees nothing
    _, lo_a, hi_a = S.bootstrap_ci(a)
    _, lo_b, hi_b = S.bootstrap_ci(b)
    assert lo_a < hi_b and lo_b < hi_a  # unpaired CIs overlap heavily


def test_paired_bootstrap_p_value_rules() -> None:
    z = np.zeros(10)
    assert S.paired_bootstrap_diff(z, z, n_boot=100)[3] == 1.0  # 2*1 clipped to 1
    rng = np.random.default_rng(5)
    a = rng.normal(size=200)
    b = a + rng.normal(0, 1, size=200)
    p = S.paired_bootstrap_diff(a, b, n_boot=1000)[3]
    assert 1 / 1000 <= p <= 1.0
    with pytest.raises(ValueError, match="equal shapes"):
        S.paired_bootstrap_diff(a, b[:-1])


def test_paired_by_col_per_layer() -> None:
    rng = np.random.default_rng(6)
    base = rng.normal(0, 3, size=(80, 1)) + np.zeros((80, 4))
    shift = np.array([0.0, 0.0, 0.5, 1.0])
    a = base + shift + rng.normal(0, 0.2, size=(80, 4))
    b = base + rng.normal(0, 0.2, size=(80, 4))
    d, lo, hi, p = S.paired_bootstrap_diff_by_col(a, b, n_boot=1000)
    assert d.shape == (4,) and np.all(lo <= d) and np.all(d <= hi)
    assert np.all(p[2:] == pytest.approx(1 / 1000)) and np.all(p[:2] > 0.01)
    assert np.all((lo[2:] < shift[2:]) & (shift[2:] < hi[2:]))


# ----------------------------------------------------------- multiple testing
def test_holm_and_bh_hand_computed() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 -> Holm 4*.005=.02, 3*.01=.03, 2*.03=.06, max(.04,.06)=.06
    np.testing.assert_allclose(S.holm(p), [0.03, 0.06, 0.06, 0.02])
    # BH: .005*4/1=.02, .01*4/2=.02, .03*4/3=.04, .04*4/4=.04 (already monotone)
    np.testing.assert_allclose(S.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    q = np.array([0.5, 0.8, 0.3])
    # Holm: .3*3=.9, .5*2=1.0, max(.8, 1.0)=1.0
    np.testing.assert_allclose(S.holm(q), [1.0, 1.0, 0.9])
    # BH: .3*3=.9, .5*3/2=.75, .8 -> running min from the top: .75, .75, .8
    np.testing.assert_allclose(S.benjamini_hochberg(q), [0.75, 0.8, 0.75])
    r = np.array([0.02, 0.02, 0.9, 0.6])  # ties; 2-D shape is kept
    # Holm: .08, max(.06,.08)=.08, max(2*.6=1.2->1, ...)=1, 1
    np.testing.assert_allclose(S.holm(r.reshape(2, 2)), [[0.08, 0.08], [1.0, 1.0]])
    # BH: .02*4/1=.08, .02*4/2=.04, .6*4/3=.8, .9 -> min from top: .04, .04, .8, .9
    np.testing.assert_allclose(S.benjamini_hochberg(r), [0.04, 0.04, 0.9, 0.8])


def test_multiple_testing_properties_and_errors() -> None:
    p = np.random.default_rng(7).uniform(size=50)
    for f in (S.holm, S.benjamini_hochberg):
        adj = f(p)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= -1e-15) and np.all(adj >= p) and np.all(adj <= 1)
    assert np.all(S.benjamini_hochberg(p) <= S.holm(p) + 1e-15)
    for bad in ([], [0.1, np.nan], [1.2]):
        with pytest.raises(ValueError):
            S.holm(bad)


# ------------------------------------------------------------------ separation
def test_auroc_and_cohens_d() -> None:
    assert S.auroc([2.0, 3.0, 4.0], [0.0, 1.0]) == 1.0
    assert S.auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert S.auroc([1.0, 1.0, 1.0], [1.0, 1.0]) == 0.5
    rng = np.random.default_rng(8)
    pos, neg = rng.normal(0.5, 1.0, 20_000), rng.normal(0.0, 1.0, 20_000)
    assert S.cohens_d(pos, neg) == pytest.approx(0.5, abs=0.03)
    assert S.cohens_d(neg, pos) == pytest.approx(-S.cohens_d(pos, neg))
    # AUROC of shifted unit normals = Phi(d / sqrt 2)
    assert S.auroc(pos, neg) == pytest.approx(sps.norm.cdf(0.5 / np.sqrt(2)), abs=0.01)


def test_separation_errors() -> None:
    for f in (S.auroc, S.cohens_d):
        with pytest.raises(ValueError, match="empty"):
            f([], [1.0, 2.0])
        with pytest.raises(ValueError, match="empty"):
            f([1.0, 2.0], [])
        with pytest.raises(ValueError, match="non-finite"):
            f([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="zero variance"):
        S.cohens_d([1.0, 1.0], [2.0, 2.0])


# ----------------------------------------------------------------- correlation
def test_pearson_spearman_values_and_nan_handling() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=300)
    y = 0.6 * x + 0.8 * rng.normal(size=300)
    xn, yn = x.copy(), y.copy()
    xn[[3, 10]] = np.nan
    yn[[10, 50, 51]] = np.nan  # 4 distinct pairs touched
    out = S.pearson_spearman(xn, yn, n_boot=1000, rng=0)
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
        S.pearson_spearman([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="constant"):
        S.pearson_spearman([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="non-finite"):
        S.pearson_spearman([1.0, np.inf, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])


# ------------------------------------------------------- random-direction null
def test_random_directions_unit_and_isotropic() -> None:
    d, n = 256, 4000
    dirs = S.random_unit_directions(d, n, rng=0)
    assert dirs.shape == (n, d) and dirs.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-12)
    fixed = np.random.default_rng(1).normal(size=d)
    cos = S.cosine_rows(dirs, fixed[None, :])[:, 0]
    assert abs(cos.mean()) < 4 / np.sqrt(d * n)
    assert cos.std() == pytest.approx(1 / np.sqrt(d), rel=0.05)
    assert np.array_equal(dirs, S.random_unit_directions(d, n, rng=0))


def test_null_p_value_edges() -> None:
    null = np.array([-0.5, 0.1, 0.2, 0.3])
    assert S.null_p_value(10.0, null) == pytest.approx(1 / 5)  # most extreme: minimum p
    assert S.null_p_value(0.0, null) == 1.0
    assert S.null_p_value(-0.3, null) == pytest.approx(3 / 5)  # ties and |.| count
    with pytest.raises(ValueError, match="empty"):
        S.null_p_value(0.1, np.array([]))
    with pytest.raises(ValueError, match="non-finite"):
        S.null_p_value(0.1, np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="finite"):
        S.null_p_value(np.nan, null)


def test_cosine_rows_zero_gradient_gives_countable_nan() -> None:
    g = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    dirs = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    cos = S.cosine_rows(g, dirs)
    np.testing.assert_allclose(cos[[0, 2]], [[1.0, 0.0], [2**-0.5, 2**-0.5]])
    assert np.isnan(cos[1]).all() and S.nan_row_count(cos) == 1
    with pytest.raises(ValueError, match="zero norm"):
        S.cosine_rows(g, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="need g"):
        S.cosine_rows(g, np.ones((1, 4)))


# ---------------------------------------------------------- regression control
def _synthetic(effect: float, n_ex: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """alignment = 0.3*loss + effect*inoc + example effect + noise, with the loss
    shifted by condition so the unadjusted contrast is confounded (+0.3*0.8)."""
    rng = np.random.default_rng(seed)
    conds = np.array(["neutral", "inoc", "control"])
    ex = np.repeat(np.arange(n_ex), 3)
    cond = np.tile(conds, n_ex)
    loss_shift = {"neutral": 0.0, "inoc": 0.8, "control": 0.3}
    base_loss = rng.normal(2.0, 0.5, size=n_ex)[ex]
    loss = base_loss + np.array([loss_shift[c] for c in cond]) + rng.normal(0, 0.5, ex.size)
    ex_effect = rng.normal(0, 0.3, size=n_ex)[ex]
    align = 0.3 * loss + effect * (cond == "inoc") + ex_effect + rng.normal(0, 0.1, ex.size)
    return {"alignment": align, "condition": cond, "example_id": ex, "loss": loss}


def _fit(data: dict[str, np.ndarray], **kw: object) -> dict[str, float | int]:
    return S.condition_effect_regression(
        data["alignment"], data["condition"], data["example_id"],
        {"loss": data["loss"]}, n_boot=kw.pop("n_boot", 1000), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("effect", [-0.2, 0.2])
def test_regression_recovers_effect_unadjusted_is_biased(effect: float) -> None:
    out = _fit(_synthetic(effect))
    assert out["coef_adjusted_lo"] < effect < out["coef_adjusted_hi"]
    assert out["coef_adjusted"] == pytest.approx(effect, abs=0.03)
    bias = 0.3 * 0.8
    assert out["coef_unadjusted"] == pytest.approx(effect + bias, abs=0.06)
    assert not out["coef_unadjusted_lo"] < effect < out["coef_unadjusted_hi"]
    assert np.sign(out["partial_r"]) == np.sign(effect)
    assert np.sign(out["partial_r_lo"]) == np.sign(out["partial_r_hi"]) == np.sign(effect)
    assert out["coef_adjusted_p_boot"] == pytest.approx(1 / 1000)
    assert out["r2_adjusted"] > out["r2_unadjusted"]
    assert out["n_rows"] == 900 and out["n_examples"] == 300
    assert out["n_dropped_nan"] == 0 and out["n_boot_degenerate"] == 0
    assert all(isinstance(v, (float, int)) for v in out.values())


def test_regression_null_effect_covers_zero_and_counts_nan() -> None:
    data = _synthetic(0.0, seed=1)
    data["alignment"][[0, 5]] = np.nan
    data["loss"][7] = np.nan
    out = _fit(data)
    assert out["coef_adjusted_lo"] < 0.0 < out["coef_adjusted_hi"]
    assert out["coef_unadjusted_lo"] > 0.0  # confounded by the loss shift
    assert out["partial_r_lo"] < 0.0 < out["partial_r_hi"]
    assert out["n_dropped_nan"] == 3 and out["n_rows"] == 897
    # covariate coefficient is per SD of loss: 0.3 * sd(loss)
    keep = ~(np.isnan(data["alignment"]) | np.isnan(data["loss"]))
    assert out["coef_cov_loss"] == pytest.approx(0.3 * data["loss"][keep].std(), rel=0.1)


def test_regression_point_estimates_match_sklearn_reference() -> None:
    d = _synthetic(0.1, n_ex=80, seed=2)
    out = _fit(d, n_boot=50)
    pair = d["condition"] != "control"
    z = (d["condition"][pair] == "inoc").astype(float)
    L = d["loss"][pair][:, None]
    ry = d["alignment"][pair] - LinearRegression().fit(L, d["alignment"][pair]).predict(L)
    rz = z - LinearRegression().fit(L, z).predict(L)
    assert out["partial_r"] == pytest.approx(np.corrcoef(ry, rz)[0, 1])
    inoc = d["condition"] == "inoc"
    neu = d["condition"] == "neutral"
    diff = d["alignment"][inoc].mean() - d["alignment"][neu].mean()
    assert out["coef_unadjusted"] == pytest.approx(diff)


def test_weighted_batch_equals_duplicated_rows() -> None:
    """The cluster bootstrap's weighted fits equal plain fits on duplicated rows."""
    rng = np.random.default_rng(3)
    N = 40
    X = np.column_stack([np.ones(N), rng.normal(size=(N, 2))])
    y = X @ [0.5, 1.0, -2.0] + rng.normal(size=N)
    z = rng.normal(size=N) + X[:, 1]
    W = rng.integers(0, 3, size=(5, N)).astype(float)
    beta = weighted_ols_batch(X, y, W)
    pr = weighted_partial_r_batch(y, z, X, W)
    for k in range(5):
        rows = np.repeat(np.arange(N), W[k].astype(int))
        ref = np.linalg.lstsq(X[rows], y[rows], rcond=None)[0]
        np.testing.assert_allclose(beta[k], ref, rtol=1e-8, atol=1e-10)
        C = X[rows, 1:]
        ry, rz = S.residualise(y[rows], C), S.residualise(z[rows], C)
        assert pr[k] == pytest.approx(np.corrcoef(ry, rz)[0, 1], rel=1e-8)


def test_regression_and_residualise_errors() -> None:
    d = _synthetic(0.0, n_ex=20)
    with pytest.raises(ValueError, match="no \\(non-NaN\\) rows"):
        S.condition_effect_regression(d["alignment"], d["condition"], d["example_id"],
                                      {"loss": d["loss"]}, target="missing", n_boot=10)
    with pytest.raises(ValueError, match="constant"):
        S.condition_effect_regression(d["alignment"], d["condition"], d["example_id"],
                                      {"c": np.ones(60)}, n_boot=10)
    with pytest.raises(ValueError, match="shape"):
        S.condition_effect_regression(d["alignment"], d["condition"], d["example_id"],
                                      {"loss": d["loss"][:-1]}, n_boot=10)
    y = np.arange(5.0)
    np.testing.assert_allclose(S.residualise(y, np.empty((5, 0))), y - 2.0)
    np.testing.assert_allclose(S.residualise(2 * y + 1, y), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        S.residualise(np.array([1.0, np.nan, 2.0]), np.arange(3.0))
