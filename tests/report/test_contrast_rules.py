"""A drift contrast's verdict under the issue-22 rules: interval over seeds AND estimate beyond the band."""

from __future__ import annotations

import pytest

from nnsight_inoc.report import contrast_rules as CR
from nnsight_inoc.report.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED


def _rows(diffs: list[float], a: str = "inoc", b: str = "neutral") -> list[dict]:
    return ([{"condition": b, "seed": s, "drift_score": 0.9} for s in range(len(diffs))]
            + [{"condition": a, "seed": s, "drift_score": 0.9 + d} for s, d in enumerate(diffs)])


def _v(diffs, predicted=CR.LESS, a="inoc", b="neutral"):
    return CR.seed_verdict(_rows(diffs, a, b), a, b, "drift_score", predicted)[0]


def test_supported_needs_the_interval_and_the_estimate_beyond_the_band():
    v = _v([-0.8, -0.82, -0.85])
    assert v.label == SUPPORTED and "3/3 seeds lower (reported, not a test)" in v.reason
    assert "exact sign-flip p 0.250" in v.reason and "t-interval over seeds" in v.reason


def test_a_consistent_small_difference_is_not_supported():
    """The referee's case: a consistent -0.011 lies below 0 with a tight CI, but inside the negligible band."""
    v = _v([-0.011, -0.0105, -0.0115])
    assert v.label == NOT_SUPPORTED and "inside the negligible band" in v.reason
    v = _v([-0.030, -0.011, 0.008])  # CI [-0.058, +0.036]: neither inside the band nor below 0
    assert v.label == INCONCLUSIVE
    assert v.shortfall == ("inoc - neutral drift: the CI's upper end +0.036 must be below 0 (0.036 short)",
                           "inoc - neutral drift: estimate -0.011 is inside the +-0.05 negligible band (0.039 short)")


def test_estimate_inside_the_band_with_the_interval_below_zero_is_inconclusive():
    v = _v([-0.035, -0.04, -0.045])  # mean -0.04, CI [-0.052, -0.028]: below 0, past -0.05
    assert v.label == INCONCLUSIVE and v.shortfall == (
        "inoc - neutral drift: estimate -0.040 is inside the +-0.05 negligible band (0.010 short)",)


def test_the_other_way_and_the_predicted_direction():
    assert _v([0.3, 0.35, 0.4]).label == NOT_SUPPORTED
    assert "the other way" in _v([0.3, 0.35, 0.4]).reason
    assert _v([0.3, 0.35, 0.4], CR.MORE).label == SUPPORTED
    v = _v([0.3, -0.2, 0.2], CR.MORE)
    assert v.label == INCONCLUSIVE and "the CI's lower end" in v.shortfall[0] and "must be above 0" in v.shortfall[0]
    with pytest.raises(ValueError, match="predicted"):
        _v([0.1, 0.2, 0.3], "lower")


def test_fewer_than_three_seeds_names_how_many_are_missing():
    v = _v([-0.8, -0.82])
    assert v.label == INCONCLUSIVE and v.shortfall == ("paired seeds inoc vs neutral: 2, needed 3 (1 missing)",)
    v = CR.seed_verdict(_rows([-0.8]), "zero_v", "neutral", "drift_score")[0]
    assert v.shortfall == ("paired seeds zero_v vs neutral: 0, needed 3 (3 missing)",) and "no paired seed" in v.reason


def test_standard_pairs_follow_the_conditions_run():
    conds = ["neutral", "inoc", "zero_v", "zero_rand", "restore_v", "leak_inoc", "inoc_leak_inoc", "leak_w8",
             "inoc_leak_w8", "inoc_leak_w2", "lossmatch"]
    assert CR.factorial_targets(conds) == ["inoc", "w8"]
    assert CR.contrast_pairs(conds) == [
        ("inoc", "neutral"), ("zero_v", "neutral"), ("zero_v", "zero_rand"), ("restore_v", "inoc"),
        ("restore_v", "neutral"), ("inoc_leak_inoc", "leak_inoc"), ("inoc_leak_w8", "leak_w8"),
        ("inoc", "leak_inoc"), ("lossmatch", "neutral")]
    blk = CR.contrasts(_rows([-0.8, -0.82, -0.85]), "drift_score")
    assert list(blk["pairs"]) == ["inoc-neutral"] and blk["negligible_drift"] == 0.05
    assert blk["pairs"]["inoc-neutral"]["per_seed"] == pytest.approx([-0.8, -0.82, -0.85])
