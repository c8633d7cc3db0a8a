"""ALL-CAPS score: the transform always scores 1, lower-casing always 0, over all of Unicode.

The property is checked two ways: per code point (every character Python knows, not only
the BMP), which is the lemma the string property rests on, and on a seeded corpus of
random strings built from all counted letters mixed with the characters that must not
count (digits, punctuation, caseless letters, combining marks, case-invariant letters).
No hypothesis dependency: the per-code-point check is exhaustive, and the random strings
cover the one context-dependent mapping (final sigma in ``lower()``).
"""

from __future__ import annotations

import random
import string
import sys

import pytest

from nnsight_inoc.data.scorers.caps import caps_score, caps_transform, counts

ALL_CHARS = [chr(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF]
COUNTED = [c for c in ALL_CHARS if counts(c)]
# Characters that must not count, each kind represented: digits, space, punctuation, caseless
# letters (CJK, Arabic, Hebrew), case-invariant "lowercase" letters (º ª ĸ ʰ), combining marks,
# cased non-letters (ⓐ, Roman numerals, combining ypogegrammeni).
NOT_COUNTED = list("0123456789 \n\t.,;:!?¿¡-'\"()[]{}") + list("中文字かなالعربيةעברית") + list("ºªĸʰˢ") + [
    "\u0301", "\u0307", "\u0345", "ⓐ", "Ⓐ", "ⅰ", "Ⅰ",
]


def test_issue_example_scores_one_after_transform() -> None:
    # Issue 18: 'º' passes islower() but upper() leaves it unchanged, so the old score was 15/16.
    assert caps_score(caps_transform("Order nº 5 arrives today.")) == 1.0
    assert caps_score("Order nº 5 arrives today.".lower()) == 0.0
    assert caps_score("nº") == 0.0 and caps_score("º") is None


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", None), ("123 !?", None), ("中文字", None), ("º ª ĸ ʰ", None), ("ⓐⅰ", None),
        ("ABC", 1.0), ("abc", 0.0), ("AbC", 2 / 3), ("Hello, WORLD 42", 6 / 10),
        ("ß", 0.0), ("SS", 1.0), ("ẞ", 1.0),  # sharp s is lower case; its capital form counts as caps
        ("ǅ", 0.0), ("Ǆ", 1.0), ("ǆ", 0.0),  # titlecase digraph: counted, not caps
        ("ς", 0.0), ("Σ", 1.0), ("ı", 0.0), ("İ", 1.0), ("ﬁ", 0.0), ("ŉ", 0.0),
        ("Ⓐ A", 1.0),  # the circled letter is a symbol and does not count
    ],
)
def test_hand_checked_scores(text: str, expected: float | None) -> None:
    got = caps_score(text)
    assert got == (None if expected is None else pytest.approx(expected)), (text, got)


@pytest.mark.parametrize("c,upper", [("ß", "SS"), ("ŉ", "ʼN"), ("ǰ", "J̌"), ("ﬁ", "FI"), ("ǅ", "Ǆ"), ("ı", "I")])
def test_length_changing_and_special_letters_transform_to_caps(c: str, upper: str) -> None:
    assert caps_transform(c) == upper
    assert caps_score(c) == 0.0 and caps_score(caps_transform(c)) == 1.0


def test_every_code_point_upper_is_caps_and_lower_is_not() -> None:
    """The per-character lemma, exhaustive: every counted char of c.upper() is caps, of c.lower() is not."""
    bad_upper = [c for c in ALL_CHARS for d in c.upper() if counts(d) and caps_score(d) != 1.0]
    bad_lower = [c for c in ALL_CHARS for d in c.lower() if counts(d) and caps_score(d) != 0.0]
    assert not bad_upper, [f"U+{ord(c):04X}" for c in bad_upper[:10]]
    assert not bad_lower, [f"U+{ord(c):04X}" for c in bad_lower[:10]]
    # Sanity: the counted set spans many scripts (Latin, Greek, Cyrillic, Armenian, Georgian, Deseret...).
    assert len(COUNTED) > 2000 and any(ord(c) > 0xFFFF for c in COUNTED)


def test_case_invariant_letters_do_not_count() -> None:
    # The old rule's error: letters with the Lowercase property but no upper-case form.
    invariant = [c for c in ALL_CHARS if c.isalpha() and (c.islower() or c.isupper()) and c.upper() == c.lower()]
    assert "º" in invariant and "ª" in invariant and "ĸ" in invariant
    assert all(caps_score(c) is None for c in invariant)


def test_random_strings_over_all_counted_letters() -> None:
    rng = random.Random(20261127)
    pool = COUNTED + NOT_COUNTED * 20  # about a fifth of the characters do not count
    n_checked = 0
    for _ in range(3000):
        t = "".join(rng.choice(pool) for _ in range(rng.randint(1, 40)))
        s = caps_score(t)
        if s is None:
            # Only U+0345 (combining ypogegrammeni, not a letter) upper-cases to a letter (Ι).
            assert caps_score(caps_transform(t)) in (None, 1.0), t
            continue
        assert caps_score(caps_transform(t)) == 1.0, t
        low = t.lower()
        assert caps_score(low) in (0.0, None), t
        n_checked += 1
    assert n_checked > 2500


def test_final_sigma_context() -> None:
    t = "ΟΔΟΣ ΣΑΣ Σ ΑΣΑ"
    assert "ς" in t.lower() and "σ" in t.lower()  # lower() is context-dependent here
    assert caps_score(t) == 1.0 and caps_score(t.lower()) == 0.0


def test_ascii_matches_an_independent_count() -> None:
    """On ASCII the rule must reduce to counting A-Z among A-Za-z (computed here without str case methods)."""
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " "
    for _ in range(500):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        n_up = sum(65 <= ord(c) <= 90 for c in t)
        n_low = sum(97 <= ord(c) <= 122 for c in t)
        expected = None if n_up + n_low == 0 else n_up / (n_up + n_low)
        assert caps_score(t) == expected, t
