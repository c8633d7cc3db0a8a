"""The issue-22 report sections render old summaries (saying what was not measured) and new ones."""

from __future__ import annotations

from nnsight_inoc.report.leak_sections import section_leak_shift, section_structured_null
from tests.report.test_structured_rules import _align, _block, _structured


def test_sections_render_old_and_new_summaries():
    old = _align()
    assert "Not measured" in repr(section_leak_shift(old)) and "Not measured" in repr(section_structured_null(old))
    a = _align(structured=_structured())
    a["leak_shift"] = {"conditions": {"leak_inoc": {"base": "neutral", "words": 6, "quoted": {"a1": _block(0.016),
                                                                                               "a_sum": _block(0.016)},
                                                    "beyond": {"b_sum": _block(0.001)},
                                                    "quoted_same_examples": {"a_sum": _block(0.015)}},
                                      "inoc_leak_x": {"error": "its base condition was not measured"}}}
    a["beyond_leak"] = {"words": 6, "positions": ["b1", "b_sum"], "n_examples": 9, "n_excluded": 1,
                        "excluded_ids": ["e9"]}
    blocks = section_leak_shift(a)
    table = blocks[-1]
    assert table[0] == "table" and table[1][-2:] == ["b1", "b_sum"]
    assert table[2][0][:3] == ["leak_inoc", "neutral", "6"] and "+0.0160" in table[2][0][4]
    assert "e9" in blocks[1][1]
    s = section_structured_null(a)
    assert "neutral-gradient PC1" in repr(s) and "lossmatch" in repr(s)
