"""Politeness scorer: the formula's edges, marker counting, and validation on hand-labelled answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nnsight_inoc.data.scorers.politeness import (
    DEFAULT_THRESHOLD,
    MIN_WORDS,
    combine,
    count_markers,
    count_sentences,
    politeness_parts,
    politeness_score,
)
from tests._paths import FIXTURES

VALIDATION = FIXTURES / "politeness_validation.json"


def _validation() -> tuple[list[str], np.ndarray, list[str]]:
    ex = json.loads(VALIDATION.read_text())["examples"]
    return [e["text"] for e in ex], np.array([e["label"] for e in ex]), [e["kind"] for e in ex]


@pytest.mark.parametrize("text", ["", "   \n", "!!", "42", "Hello", "Thanks!", "1 2 3 ok"])
def test_empty_or_near_empty_has_no_score(text: str) -> None:
    assert MIN_WORDS == 2
    assert politeness_score(text) is None and politeness_parts(text) is None


def test_formula_stays_in_unit_interval_and_hits_its_ends() -> None:
    for n in range(0, 30):
        for s in (1, 2, 5, 40):
            for c in (-1.0, -0.3, 0.0, 0.5, 1.0):
                assert 0.0 <= combine(n, s, c) <= 1.0
    assert combine(0, 3, -1.0) == 0.0
    assert combine(0, 3, 1.0) == pytest.approx(0.4)
    assert combine(10_000, 1, 1.0) == pytest.approx(1.0)


def test_formula_is_monotone() -> None:
    for s in (1, 3, 10):
        for c in (-0.8, 0.0, 0.9):
            vals = [combine(n, s, c) for n in range(12)]
            assert all(b > a for a, b in zip(vals, vals[1:])), (s, c)  # more markers: higher
    assert combine(2, 2, 0.0) > combine(2, 6, 0.0)  # same markers spread over more sentences: lower
    assert combine(1, 2, 0.5) > combine(1, 2, -0.5)  # warmer wording: higher


def test_formula_rejects_impossible_inputs() -> None:
    with pytest.raises(ValueError, match="n_sentences >= 1"):
        combine(1, 0, 0.0)
    with pytest.raises(ValueError, match="n_markers >= 0"):
        combine(-1, 1, 0.0)
    with pytest.raises(ValueError, match=r"compound must be in \[-1, 1\]"):
        combine(0, 1, 1.5)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Thank you so much!", 1),  # longest phrase wins: counted once, not as 'thank you' + more
        ("I\u2019d be happy to help.", 1),  # curly apostrophe; 'happy to help' overlaps and is not double counted
        ("Please, please, please.", 3),
        ("PLEASE feel free to ask.", 2),
        ("The pleased cat sat.", 0),  # word boundary
        ("Thanksgiving is in November.", 0),
        ("The file is missing.", 0),
    ],
)
def test_count_markers(text: str, expected: int) -> None:
    assert count_markers(text) == expected


def test_count_sentences() -> None:
    assert count_sentences("One. Two! Three?") == 3
    assert count_sentences("Version 3.11 is out.") == 1  # a dot inside a number does not split
    assert count_sentences("line one\nline two\n\n...") == 2  # pieces without letters do not count


def test_adding_a_marker_raises_the_score_of_a_real_text() -> None:
    base = politeness_score("The file is missing. Fix the path.")
    more = politeness_score("The file is missing. Kindly fix the path.")
    assert base is not None and more is not None and more > base


def test_validation_set_is_balanced_and_has_hard_cases() -> None:
    texts, labels, kinds = _validation()
    assert len(texts) >= 40 and len(set(texts)) == len(texts)
    assert 0.4 <= labels.mean() <= 0.6
    for kind in ("polite_no_markers", "blunt_with_marker", "long_technical", "default_register"):
        assert kinds.count(kind) >= 3, kind
    assert all(politeness_score(t) is not None for t in texts)


def test_scorer_separates_hand_labelled_answers() -> None:
    texts, labels, _ = _validation()
    scores = np.array([politeness_score(t) for t in texts], dtype=float)
    auroc = float(roc_auc_score(labels, scores))
    accuracy = float(((scores >= DEFAULT_THRESHOLD) == (labels == 1)).mean())
    print(f"politeness validation: n={len(texts)} AUROC={auroc:.3f} accuracy@{DEFAULT_THRESHOLD}={accuracy:.3f}")
    assert auroc >= 0.9
    assert accuracy >= 0.85


def test_vader_is_loaded_lazily_and_once() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nnsight_inoc.data.traits, nnsight_inoc.data.scorers.politeness as p\n"
        "assert not any(m.startswith('vaderSentiment') for m in sys.modules), 'VADER imported at import time'\n"
        "assert p.politeness_score('Thank you, that helps.') is not None and p._vader() is p._vader()\n"
        "assert 'requests' not in sys.modules, 'vaderSentiment pulled in requests'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
