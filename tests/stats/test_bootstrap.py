"""Percentile bootstrap over examples: coverage, sqrt(n) width, pairing, and shared resampling across columns."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from nnsight_inoc.stats import bootstrap as S


def _mean_ci(x: np.ndarray, **kw) -> tuple[float, float, float]:
    est, lo, hi = S.bootstrap_mean_ci_by_col(np.asarray(x)[:, None], **kw)
    return float(est[0]), float(lo[0]), float(hi[0])


def _paired(a: np.ndarray, b: np.ndarray, **kw) -> tuple[float, float, float, float]:
    d, lo, hi, p = S.paired_bootstrap_diff_by_col(np.asarray(a)[:, None], np.asarray(b)[:, None], **kw)
    return float(d[0]), float(lo[0]), float(hi[0]), float(p[0])


def test_bootstrap_ci_covers_true_mean_and_shrinks_like_sqrt_n() -> None:
    rng = np.random.default_rng(1)
    big = rng.normal(3.0, 2.0, size=10_000)
    est, lo, hi = _mean_ci(big, rng=0)
    assert lo < 3.0 < hi and lo < est < hi
    assert est == pytest.approx(big.mean())
    # half-width ~ 1.96 * sd / sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(1.96 * 2.0 / 100, rel=0.1)
    _, lo4, hi4 = _mean_ci(big[:2500], rng=0)
    assert (hi4 - lo4) / (hi - lo) == pytest.approx(2.0, rel=0.15)


def test_by_col_matches_a_plain_loop_bootstrap_and_has_nominal_coverage() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 400))  # 400 independent "layers" with true mean 0
    est, lo, hi = S.bootstrap_mean_ci_by_col(x, n_boot=2000, rng=7)
    assert est.shape == lo.shape == hi.shape == (400,)
    coverage = np.mean((lo < 0) & (hi > 0))
    assert 0.88 <= coverage <= 0.99
    # the simple reference: the same resampled rows, one Python-level mean per draw and column
    idx = np.concatenate(list(S.resample_index_chunks(50, 2000, 7)))
    boots = np.stack([x[row].mean(0) for row in idx])
    ref_lo, ref_hi = np.quantile(boots, [0.025, 0.975], axis=0)
    np.testing.assert_allclose(lo, ref_lo, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hi, ref_hi, rtol=1e-12, atol=1e-12)


def test_bootstrap_rejects_nan_and_bad_args() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        _mean_ci(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="non-finite"):
        S.bootstrap_mean_ci_by_col(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        _mean_ci(np.array([1.0]))
    with pytest.raises(TypeError, match="rng"):
        _mean_ci(np.arange(5.0), rng=None)  # type: ignore[arg-type]


def test_paired_bootstrap_detects_shift_unpaired_misses() -> None:
    rng = np.random.default_rng(4)
    n = 60
    per_example = rng.normal(0, 5.0, size=n)  # large between-example variance
    b = per_example + rng.normal(0, 0.3, size=n)
    a = per_example + 0.3 + rng.normal(0, 0.3, size=n)
    d, lo, hi, p = _paired(a, b, n_boot=2000, rng=0)
    assert d == pytest.approx(np.mean(a - b))
    assert 0 < lo < 0.3 < hi
    assert p == pytest.approx(1 / 2000)  # every draw > 0 -> clipped at 1/n_boot
    assert sps.ttest_ind(a, b).pvalue > 0.5  # the unpaired test sees nothing
    _, lo_a, hi_a = _mean_ci(a)
    _, lo_b, hi_b = _mean_ci(b)
    assert lo_a < hi_b and lo_b < hi_a  # unpaired CIs overlap heavily


def test_paired_bootstrap_p_value_rules() -> None:
    z = np.zeros(10)
    assert _paired(z, z, n_boot=100)[3] == 1.0  # 2*1 clipped to 1
    rng = np.random.default_rng(5)
    a = rng.normal(size=200)
    b = a + rng.normal(0, 1, size=200)
    p = _paired(a, b, n_boot=1000)[3]
    assert 1 / 1000 <= p <= 1.0
    with pytest.raises(ValueError, match="equal shapes"):
        _paired(a, b[:-1])


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


# ---- crossed (seeds x panel prompts) bootstrap ------------------------------------------------

def test_crossed_bootstrap_equals_a_plain_loop_reference() -> None:
    """Same draws as a loop that resamples rows, then columns, and averages the sub-table."""
    x = np.random.default_rng(11).normal(size=(3, 6))
    out = S.crossed_bootstrap_mean(x, n_boot=500, rng=3)
    gen = np.random.default_rng(3)
    rows, cols = gen.integers(0, 3, size=(500, 3)), gen.integers(0, 6, size=(500, 6))
    boots = np.array([x[r][:, c].mean() for r, c in zip(rows, cols)])
    lo, hi = np.quantile(boots, [0.025, 0.975])
    assert out["mean"] == pytest.approx(x.mean())
    assert out["lo"] == pytest.approx(lo, abs=1e-12) and out["hi"] == pytest.approx(hi, abs=1e-12)
    assert (out["n_rows"], out["n_cols"], out["n_boot"]) == (3, 6, 500)


def test_crossed_bootstrap_covers_the_mean_of_a_crossed_design() -> None:
    """Seed and prompt effects both random: the interval must cover the true mean (0) at about the
    nominal rate or more (Owen's pigeonhole bootstrap is mildly conservative)."""
    rng = np.random.default_rng(12)
    hits = 0
    for _ in range(150):
        x = rng.normal(0, 1, size=(6, 1)) + rng.normal(0, 1, size=(1, 8)) + rng.normal(0, 0.5, size=(6, 8))
        out = S.crossed_bootstrap_mean(x, n_boot=400, rng=int(rng.integers(1 << 30)))
        hits += out["lo"] < 0 < out["hi"]
    assert 0.85 <= hits / 150 <= 1.0


def test_crossed_bootstrap_one_seed_is_a_bootstrap_over_prompts_and_errors() -> None:
    x = np.arange(8.0)[None, :]
    out = S.crossed_bootstrap_mean(x, n_boot=300, rng=0)
    assert out["n_rows"] == 1 and out["lo"] < x.mean() < out["hi"]
    with pytest.raises(ValueError, match="1 x 1"):
        S.crossed_bootstrap_mean(np.ones((1, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        S.crossed_bootstrap_mean(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="2-D"):
        S.crossed_bootstrap_mean(np.arange(4.0))
