"""The answer's logic under the issue-22 rules (C5, C2, C9, C10 required), on bare verdicts.

The outcome patterns on synthetic finetune-summary rows are in test_causal_rules.py."""

from __future__ import annotations

import pytest

from nnsight_inoc.report.answer import REQUIRED, answer
from nnsight_inoc.report.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict

S, N, I = SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE


def _all(**over: str) -> dict[str, str]:
    return {c: over.get(c, S) for c in REQUIRED}


def test_required_claims_and_labels():
    assert REQUIRED == ("C5", "C2", "C9", "C10")
    v = answer(_all())
    assert v.label == S and "(zero_v)" in v.reason and "(restore_v) brought drift back" in v.reason
    assert answer(_all(C5=N)).label == N
    assert answer(_all(C5=I)).label == I
    assert answer(_all(C5=I, C9=N)).label == I  # C5 undecided: the answer is too, whatever the arms say
    assert answer(_all(C9=N)).label == N
    assert answer(_all(C10=N)).label == N
    assert answer(_all(C2=N)).label == I  # the alignment claim against, the arms for: not decided either way
    assert answer(_all(C9=I)).label == I and answer(_all(C10=I)).label == I and answer(_all(C2=I)).label == I
    with pytest.raises(ValueError, match=r"missing \['C9', 'C10'\]"):
        answer({"C5": S, "C2": S})


def test_the_sentence_says_which_arm_did_what():
    v = answer(_all(C10=N))
    assert v.reason.startswith("No: inoculation (inoc) drifted less than neutral (C5), but not through v")
    assert "restoring v's component under the inoculation prompt (restore_v) left inoculation's protection intact" \
        in v.reason
    c9 = Verdict(N, "decided against by zero_v - zero_rand (removing v's component did no better than removing a "
                    "random direction's). numbers")
    v = answer({**_all(), "C9": c9})
    assert "(C9: decided against by zero_v - zero_rand" in v.reason and "numbers" not in v.reason


def test_inconclusive_answer_names_what_fell_short():
    band = "zero_v - neutral drift: estimate -0.011 is inside the +-0.05 negligible band (0.039 short)"
    ci = "restore_v - inoc drift: the CI's lower end -0.020 must be above 0 (0.020 short)"
    v = answer({"C5": Verdict(S, ""), "C2": Verdict(S, ""), "C9": Verdict(I, "x", (band,)),
                "C10": Verdict(I, "y", (ci, band))})
    assert v.label == I and "What fell short" in v.reason
    assert v.reason.count(band) == 1 and f"{band} (C9, C10)" in v.reason and ci in v.reason
    assert v.shortfall == (band, ci)
