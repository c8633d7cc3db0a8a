"""C1 against the structured null and C2 beyond the quote (issue 22), on synthetic summaries whose answer is
obvious; old summaries without the new blocks keep their sphere verdict and say what was not measured."""

from __future__ import annotations

from nnsight_inoc.report import alignment_rules as R
from nnsight_inoc.report.structured_rules import structured_check
from nnsight_inoc.report.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED

L, LAYER = 4, 3


def _block(d: float, half: float = 0.002, p: float = 0.001) -> dict:
    return {"diff_cos": [d] * L, "lo": [d - half] * L, "hi": [d + half] * L, "p_boot": [p] * L,
            "p_boot_holm": [p] * L, "null_p_exact": [p] * L, "null_p_exact_holm": [p] * L}


def _e(d: float, half: float = 0.002) -> dict:
    return {"diff_cos": d, "lo": d - half, "hi": d + half, "p_boot": 0.001}


def _loss(d: float) -> dict:
    return {"diff": d, "lo": d - 0.001, "hi": d + 0.001, "p": 0.001}


def _align(inoc_neutral: float = -0.01, structured: dict | None = None, **extra) -> dict:
    a = {"layer": LAYER, "positions": ["final_prompt", "a1", "a_sum"], "contrasts": {
        "inoc-neutral": {"loss": _loss(-0.03), "a_sum": _block(inoc_neutral), "final_prompt": _block(inoc_neutral)},
        "inoc-lossmatch": {"loss": _loss(-0.02), "a_sum": _block(-0.005), "final_prompt": _block(-0.005)}}}
    if structured is not None:
        a["structured_null"] = structured
    a.update(extra)
    return a


def _structured(v: float = -0.01, pc1: float = 0.004, other: float = -0.002, inoc_minus_lm: float = -0.006) -> dict:
    return {"contrast": "inoc-neutral", "layer": LAYER, "position": "a_sum", "n_examples": 100, "v": _e(v),
            "other_traits": {"spanish": {**_e(other), "cos_with_v": 0.1}},
            "pcs": {"n": 2, "of": "neutral", "directions": {"pc1": {**_e(pc1), "explained_variance": 0.2},
                                                            "pc2": {**_e(0.001), "explained_variance": 0.1}}},
            "trait_free": {"lossmatch": {"shift": _e(-0.004), "inoc_minus": _e(inoc_minus_lm)}}}


def test_old_summary_keeps_the_sphere_verdict_and_says_so():
    v = R.c1_rotation(_align())
    assert v.label == SUPPORTED and "structured null" in v.reason and "not measured" in v.reason


def test_structured_null_passes():
    v = R.c1_rotation(_align(structured=_structured()))
    assert v.label == SUPPORTED and "beyond the structured null" in v.reason


def test_a_pc_that_beats_v_makes_c1_inconclusive_and_is_named():
    v = R.c1_rotation(_align(structured=_structured(pc1=0.015)))
    assert v.label == INCONCLUSIVE
    assert any("neutral-gradient PC1" in s and "by 0.0050" in s for s in v.shortfall), v.shortfall


def test_another_trait_that_ties_v_is_a_shortfall():
    v = R.c1_rotation(_align(structured=_structured(other=0.01)))
    assert v.label == INCONCLUSIVE and any("trait spanish" in s for s in v.shortfall)


def test_shift_within_the_trait_free_prompts_own_is_a_shortfall():
    v = R.c1_rotation(_align(structured=_structured(inoc_minus_lm=-0.001)))  # CI [-0.003, +0.001] spans 0
    assert v.label == INCONCLUSIVE and any("not beyond lossmatch" in s for s in v.shortfall)
    s = _structured()
    del s["trait_free"]["lossmatch"]
    assert any("lossmatch not measured" in x for x in structured_check(s)[2])


def test_sphere_failure_stays_not_supported():
    v = R.c1_rotation(_align(inoc_neutral=0.01, structured=_structured(v=0.01)))
    assert v.label == NOT_SUPPORTED and "structured null at layer" in v.reason


def test_structured_null_read_back_with_nan_for_missing_traits():
    s = _structured()
    s["other_traits"] = float("nan")  # JSON null as the report loads it
    ok, _, short = structured_check(s)
    assert not ok and any("other traits" in x for x in short)
    assert structured_check(float("nan")) is None and structured_check({"error": "x"})[0] is False


def _leak_align(beyond: bool) -> dict:
    a = _align()
    a["contrasts"]["inoc-leak_inoc"] = {"loss": _loss(-0.0005), "a_sum": _block(-0.02), "final_prompt": _block(-0.02)}
    if beyond:
        a["beyond_leak"] = {"words": 17, "positions": ["b1", "b2", "b3", "b_sum"], "n_examples": 900,
                            "n_excluded": 93, "excluded_ids": ["x"] * 93,
                            "contrasts": {"inoc-leak_inoc": {"b_sum": _block(-0.001, half=0.003)}}}
    return a


def test_c2_is_judged_beyond_the_quote_when_measured():
    v = R.c2_beyond_lossmatch(_leak_align(True))
    assert v.label == NOT_SUPPORTED  # beyond the quote the CI spans 0, though inside it the shift looked clear
    assert "layer 3, b_sum: inoc-leak_inoc cos -0.0010" in v.reason
    assert "inside the quote" in v.reason and "layer 3, a_sum: inoc-leak_inoc cos -0.0200" in v.reason
    assert "17 words; 900 examples, 93 excluded" in v.reason


def test_c2_on_an_old_summary_reads_a_sum_and_says_why():
    v = R.c2_beyond_lossmatch(_leak_align(False))
    assert v.label == SUPPORTED and "predates issue 22" in v.reason and "layer 3, a_sum" in v.reason
    plain = R.c2_beyond_lossmatch(_align())  # no leak: the pool prompt, read as before
    assert "predates" not in plain.reason and "b_sum" not in plain.reason
