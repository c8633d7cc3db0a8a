"""One look per condition across a study's plots, the reading order, and families from names."""

from __future__ import annotations

from nnsight_inoc.report.palette import condition_order, condition_styles, family, styles_for


def test_order_puts_main_then_arms_then_controls_then_the_rest() -> None:
    names = ["frame_quirk", "explicit", "zero_v", "inoc", "leak_inoc", "neutral", "lossmatch", "flip_v", "inoc"]
    assert condition_order(names) == ["neutral", "inoc", "zero_v", "flip_v", "lossmatch", "leak_inoc", "explicit",
                                      "frame_quirk"]


def test_a_condition_keeps_its_look_whatever_the_subset() -> None:
    big = condition_styles(["neutral", "inoc", "near_titles", "explicit", "frame_quirk"])
    small = condition_styles(["inoc", "explicit"])
    assert big["inoc"] == small["inoc"] and big["explicit"] == small["explicit"]
    looks = {(s["color"], s["marker"]) for s in big.values()}
    assert len(looks) == len(big)
    assert styles_for(["inoc", "new"], big)["inoc"] == big["inoc"] and "new" in styles_for(["inoc", "new"], big)


def test_family_from_the_name() -> None:
    assert [family(c) for c in ("neutral", "explicit", "lossmatch", "leak_w24", "inoc_leak_inoc", "zero_v",
                                "steer_a0.1_l14", "inoc_para1")] == [
        "main", "main", "loss-matched", "leak factorial", "leak factorial", "causal arm", "steering", "variants"]
