"""No printed interval outside its quantity's range, no zero-width 'interval' over identical step-0 seeds,
no percentage of almost nothing, and C6's r never shown without its partial r."""

from __future__ import annotations

from nnsight_inoc.report import drift_rules as DR
from nnsight_inoc.report import steering as ST
from nnsight_inoc.report.intervals_fmt import CORR_RANGE, SCORE_DIFF_RANGE, fmt_ci, fmt_share
from tests.report.test_drift_rules import _rows, _write


def test_an_interval_past_the_range_is_clipped_and_says_so() -> None:
    assert fmt_ci(-0.84, -1.002, -0.679, 3, SCORE_DIFF_RANGE) == (
        "-0.840 [-1.000, -0.679] (CI clipped to [-1, 1], the possible range)")
    assert fmt_ci(0.67, -0.97, 1.04, 2, CORR_RANGE).startswith("+0.67 [-0.97, +1.00] (CI clipped")
    assert fmt_ci(0.5, 0.2, 0.8, 2, CORR_RANGE) == "+0.50 [+0.20, +0.80]"


def test_a_share_of_almost_nothing_is_not_a_percentage() -> None:
    assert fmt_share(-0.0147, -0.0303) == "49%"
    out = fmt_share(-0.0147, 0.0002, "nats")
    assert "%" not in out and "not a percentage" in out and "0.0147 against 0.0002 nats" in out


def test_step0_differences_identical_over_seeds_read_seed_independent() -> None:
    assert ST._fmt((-0.0049, -0.0049, -0.0049, 3), 4, None, step0=True) == "-0.0049, seed-independent (step 0) (n=3)"
    assert ST._fmt((-0.0019, -0.0045, 0.0007, 3), 4, None, step0=True) == "-0.0019 [-0.0045, +0.0007] (n=3)"
    assert "clipped" in ST._fmt((-0.84, -1.002, -0.679, 3))


def test_the_steering_table_shows_no_zero_width_step0_interval() -> None:
    rows = []
    for c in ("neutral", "inoc", "steer_a0.1_l14"):
        for s in range(3):
            rows.append({"condition": c, "seed": s, "drift_score": 0.9 if c == "neutral" else 0.1 * s,
                         "align_during": 0.01 * s, "align_pre": 0.07 if c == "neutral" else 0.06,
                         "train_prompt_post_score": 0.9, "steering": {"alpha": 0.1, "layers": [14]}
                         if c.startswith("steer") else None})
    table = next(b for b in ST.section({"rows": rows}) if b[0] == "table")
    step0 = [r[5] for r in table[2]]
    assert all("seed-independent (step 0)" in x and "[" not in x for x in step0), step0


def test_c5_clips_and_c6_shows_the_partial_r(tmp_path) -> None:
    _write(tmp_path, _rows({"inoc": [-0.99, -0.6, -0.98]}))
    v = DR.c5_drift(tmp_path)
    assert "CI clipped to [-1, 1], the possible range" in v.reason and "[-1.000, " in v.reason
    rel = {"collinearity": {}, "align_pre~drift_score": {"r": 0.76, "lo": 0.56, "hi": 0.93, "n_runs": 48, "n_groups": 16},
           "align_pre~drift_score|loss_reduction": {"r": -0.70, "lo": -0.91, "hi": -0.26, "n_runs": 48,
                                                    "n_groups": 16}}
    _write(tmp_path, _rows({"inoc": [-0.8, -0.82, -0.85]}), relation=rel)
    v = DR.c6_drift_tracks_alignment(tmp_path)
    assert "r +0.76 [+0.56, +0.93]" in v.reason
    assert "partial r given loss reduction: align_pre~drift_score|loss_reduction: r -0.70 [-0.91, -0.26]" in v.reason


def test_fmt_est_never_prints_an_estimate_outside_its_interval():
    from nnsight_inoc.report.intervals_fmt import fmt_est

    assert fmt_est(0.1, 0.0, 0.2) == "+0.100 [+0.000, +0.200]"
    out = fmt_est(2.588, -0.734, 0.690)  # a percentile interval of a ratio with a near-zero denominator
    assert out.startswith("+2.588 (its interval") and "not an interval" in out
    assert fmt_est(0.2, float("nan"), float("nan")) == "+0.200 (no interval: one value)"
    assert fmt_est(float("nan"), 0, 1) == "n/a"


def test_match_words_gives_no_percentage_of_nothing():
    from nnsight_inoc.report.intervals_fmt import match_words

    assert match_words(0.105, 0.1) == "+5.0% off"
    assert match_words(0.09, 0.1, 0.08, 0.12, -0.2, 0.0) == "-10.0% off [-20.0%, +0.0%]"
    assert "does not contain the estimate" in match_words(0.09, 0.1, 0.08, 0.12, 0.5, 0.9)
    for args in ((0.0515, 0.0002), (0.0515, 0.0125, -0.02, 0.03), (0.2, 0.01)):
        out = match_words(*args)
        assert "%" not in out and "no percentage" in out, args
