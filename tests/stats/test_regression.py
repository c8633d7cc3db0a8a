"""The regression control against scikit-learn, with a cluster bootstrap equal to duplicated rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from nnsight_inoc.stats.regression import (
    condition_effect_regression,
    residualise,
    weighted_ols_batch,
    weighted_partial_r_batch,
)


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
    return condition_effect_regression(
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
        ry, rz = residualise(y[rows], C), residualise(z[rows], C)
        assert pr[k] == pytest.approx(np.corrcoef(ry, rz)[0, 1], rel=1e-8)


def test_regression_and_residualise_errors() -> None:
    d = _synthetic(0.0, n_ex=20)
    with pytest.raises(ValueError, match="no \\(non-NaN\\) rows"):
        condition_effect_regression(d["alignment"], d["condition"], d["example_id"],
                                      {"loss": d["loss"]}, target="missing", n_boot=10)
    with pytest.raises(ValueError, match="constant"):
        condition_effect_regression(d["alignment"], d["condition"], d["example_id"],
                                      {"c": np.ones(60)}, n_boot=10)
    with pytest.raises(ValueError, match="shape"):
        condition_effect_regression(d["alignment"], d["condition"], d["example_id"],
                                      {"loss": d["loss"][:-1]}, n_boot=10)
    y = np.arange(5.0)
    np.testing.assert_allclose(residualise(y, np.empty((5, 0))), y - 2.0)
    np.testing.assert_allclose(residualise(2 * y + 1, y), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        residualise(np.array([1.0, np.nan, 2.0]), np.arange(3.0))


def test_residualise_equals_sklearn_weighted_and_unweighted() -> None:
    rng = np.random.default_rng(8)
    X = rng.normal(size=(30, 2))
    y = X @ [1.0, -0.5] + rng.normal(size=30)
    w = rng.integers(1, 4, size=30).astype(float)
    for sw in (None, w):
        ref = y - LinearRegression().fit(X, y, sample_weight=sw).predict(X)
        np.testing.assert_allclose(residualise(y, X, sample_weight=sw), ref, atol=1e-10)


# ---- control C at the example level -------------------------------------------------------------
from nnsight_inoc.stats.regression import example_level_effect  # noqa: E402


def _deltas(a: dict[str, float], b: float, n_ex: int = 400, seed: int = 0):
    """dcos = a_c + b * dloss + noise, with dloss shifted by condition (as a prompt shifts the loss)."""
    rng = np.random.default_rng(seed)
    conds = list(a)
    cond = np.repeat(conds, n_ex)
    ex = np.tile(np.arange(n_ex), len(conds))
    shift = {c: -0.1 * (k + 1) for k, c in enumerate(conds)}
    dloss = np.array([shift[c] for c in cond]) + rng.normal(0, 0.2, cond.size)
    dcos = np.array([a[c] for c in cond]) + b * dloss + rng.normal(0, 0.01, cond.size) + rng.normal(0, 0.005, n_ex)[ex]
    return dcos, dloss, cond, ex


def test_example_level_recovers_intercepts_and_slope() -> None:
    truth = {"inoc": -0.01, "lossmatch": 0.0, "explicit": -0.03}
    dcos, dloss, cond, ex = _deltas(truth, b=0.05)
    out = example_level_effect(dcos, dloss, cond, ex, n_boot=500, rng=0)
    X = np.column_stack([(cond == c).astype(float) for c in truth] + [dloss])
    ref = np.linalg.lstsq(X, dcos, rcond=None)[0]
    for j, c in enumerate(truth):
        blk = out["intercept"][c]
        assert blk["est"] == pytest.approx(ref[j])
        # se of an intercept here is about 0.0007 (noise 0.01 over 400 examples, plus the slope's error)
        assert blk["lo"] < blk["est"] < blk["hi"] and abs(blk["est"] - truth[c]) < 0.003
        assert 0.001 < blk["hi"] - blk["lo"] < 0.006
    assert out["slope"]["est"] == pytest.approx(ref[-1]) and out["slope"]["lo"] < 0.05 < out["slope"]["hi"]
    assert out["intercept"]["inoc"]["hi"] < 0 and out["intercept"]["inoc"]["p_boot"] == pytest.approx(1 / 500)
    # the raw mean change mixes the intercept with the loss shift: -0.01 + 0.05 * -0.1
    assert out["mean_dcos"]["inoc"] == pytest.approx(-0.015, abs=0.003)
    sel = cond == "inoc"
    assert out["r_dcos_dloss"]["inoc"] == pytest.approx(np.corrcoef(dloss[sel], dcos[sel])[0, 1])
    assert out["n_examples"] == 400 and out["n_rows"] == 1200 and out["mediator"] is None


def test_example_level_mediator_model_and_nan_rows() -> None:
    dcos, dloss, cond, ex = _deltas({"inoc": -0.01, "lossmatch": 0.0}, b=0.05, seed=1)
    med = dcos * 10 + np.random.default_rng(3).normal(0, 0.01, dcos.size)  # a mediator that carries dcos
    dcos[3] = np.nan
    out = example_level_effect(dcos, dloss, cond, ex, mediator=med, n_boot=200, rng=0)
    assert out["n_dropped_nan"] == 1 and "mediator" in out["model"]
    assert out["mediator"]["lo"] > 0  # it explains the angle change ...
    for c in ("inoc", "lossmatch"):  # ... so the condition effect at no change in the mediator vanishes
        assert abs(out["intercept"][c]["est"]) < 0.002


def test_example_level_errors() -> None:
    with pytest.raises(ValueError, match="constant"):
        example_level_effect(np.arange(4.0), np.ones(4), np.array(["a"] * 4), np.arange(4), n_boot=10)
    with pytest.raises(ValueError, match="equal length"):
        example_level_effect(np.arange(4.0), np.arange(3.0), np.array(["a"] * 4), np.arange(4), n_boot=10)


def test_example_level_draws_equal_least_squares_on_duplicated_examples() -> None:
    """The bootstrap's sufficient-statistics fit equals a plain fit on the drawn examples' rows, duplicated."""
    from nnsight_inoc.stats.regression import _cell_sums, _within_fit

    dcos, dloss, cond, ex = _deltas({"inoc": -0.01, "lossmatch": 0.0, "explicit": 0.02}, b=0.05, n_ex=30, seed=4)
    med = np.random.default_rng(5).normal(size=dcos.size)
    levels = ["inoc", "lossmatch", "explicit"]
    codes = np.array([levels.index(c) for c in cond])
    Z = np.column_stack([dloss, med])
    stats = _cell_sums(dcos, Z, ex, codes, 30, 3)
    counts = np.random.default_rng(6).integers(0, 3, size=(4, 30)).astype(float)
    fits = _within_fit(np.einsum("be,ecq->bcq", counts, stats))
    X = np.column_stack([(codes == j).astype(float) for j in range(3)] + [dloss, med])
    for k in range(4):
        rows = np.concatenate([np.flatnonzero(ex == e).repeat(int(counts[k, e])) for e in range(30)])
        np.testing.assert_allclose(fits[k], np.linalg.lstsq(X[rows], dcos[rows], rcond=None)[0], atol=1e-10)
