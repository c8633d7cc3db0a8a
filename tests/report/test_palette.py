"""One look per condition across a study's plots, the reading order, and families from names."""

from __future__ import annotations

from nnsight_inoc.report.palette import condition_order, condition_styles, family, styles_for


def test_order_puts_main_then_arms_then_controls_then_the_rest() -> None:
    names = ["frame_quirk", "explicit", "zero_v", "inoc", "leak_inoc", "neutral", "lossmatch", "flip_v", "inoc"]
    assert condition_order(names) == ["neutral", "inoc", "zero_v", "flip_v", "lossmatch", "leak_inoc", "explicit",
                                      "frame_quirk"]


def test_one_map_per_study_distinct_colours_up_to_20() -> None:
    study = ["neutral", "inoc", "explicit", "lossmatch"] + [f"variant{i}" for i in range(16)]
    big = condition_styles(study)
    assert len({s["color"] for s in big.values()}) == 20
    assert len({(s["color"], s["marker"]) for s in condition_styles(study + ["x", "y"]).values()}) == 22
    assert styles_for(["inoc", "new"], big)["inoc"] == big["inoc"] and "new" in styles_for(["inoc", "new"], big)


def test_family_from_the_name() -> None:
    assert [family(c) for c in ("neutral", "explicit", "lossmatch", "leak_w24", "inoc_leak_inoc", "zero_v",
                                "steer_a0.1_l14", "inoc_para1")] == [
        "main", "main", "loss-matched", "leak factorial", "leak factorial", "causal arm", "steering", "variants"]
