"""ALL-CAPS score and transform: the share of case-changeable letters that are upper case.

Why a new rule: the old score counted every letter that passes ``islower()`` or ``isupper()``,
and Unicode gives the Lowercase property to letters that have no upper-case form: ``º`` and
``ª`` (ordinal indicators), ``ĸ`` (kra), modifier letters such as ``ʰ``, and about 1,400
others. ``upper()`` leaves them as they are, so an upper-cased text could not reach 1
(``"Order nº 5 arrives today."`` upper-cased scored 15/16). Issue 18, part D.

Rule (both halves are plain ``str`` methods, so they follow the running Python's Unicode
tables; 3.11 ships Unicode 14.0.0)::

    counts(c) = c.isalpha() and c.upper() != c.lower()   # a letter whose case can change
    caps(c)   = c == c.upper()                            # already in upper-case form
    score     = #{c counted and caps} / #{c counted}      # None when nothing counts

Edge letters, checked in ``tests/test_caps_score.py``:
- ``ß``, ``ŉ``, ``ǰ``, ``ﬁ`` and about 100 others upper-case to several characters
  (``SS``, ``ʼN``, ``J̌``, ``FI``). Each counts and is not caps; after the transform its pieces
  are caps or do not count (``ʼ`` and combining marks do not count). Length changes do not
  matter because the score is a share of the characters present.
- Titlecase digraphs (``ǅ``, ``ǈ``, ``ǋ``, ``ǲ``) and Greek titlecase letters with
  ypogegrammeni (``ᾈ``) were not counted before (neither ``isupper`` nor ``islower``). They
  count now, as not caps: half of the digraph is lower case.
- Greek final sigma ``ς`` counts as lower case; ``Σ`` lower-cases to ``σ`` or ``ς`` by
  context, both lower case. Turkish ``ı`` counts as lower case and upper-cases to ``I``;
  ``İ`` lower-cases to ``i`` plus a combining dot, which does not count.
- Cased symbols that are not letters (circled ``ⓐ``, Roman numeral ``ⅰ``, combining
  ypogegrammeni U+0345) do not count: the trait is about letters, as before. U+0345 is the
  one character that does not count but upper-cases to one that does (``Ι``), so a text made
  only of it is unscorable while its transform scores 1; harmless for the property below.

Exhaustive check over every code point (Python 3.11, Unicode 14.0.0): 2,842 letters count
(the old rule counted 4,259: 1,448 case-invariant letters dropped, 31 titlecase letters
added). For every code point ``c``, every counted character of ``c.upper()`` is caps and
no counted character of ``c.lower()`` is caps, so ``caps_score(caps_transform(t)) == 1``
for every scorable ``t`` and ``caps_score(t.lower()) == 0`` wherever ``t.lower()`` is scorable.

The transform stays ``str.upper()``: ``ß`` -> ``SS`` is the standard (Unicode SpecialCasing)
upper-case form and scores as two capitals; the score does not need a length-preserving map.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def _kind(c: str) -> int:
    """1: counted and caps, 0: counted and not caps, -1: not counted. Cached per character."""
    if not (c.isalpha() and c.upper() != c.lower()):
        return -1
    return 1 if c == c.upper() else 0


def counts(c: str) -> bool:
    """Whether one character is a letter whose case can change (see the module docstring)."""
    return _kind(c) >= 0


def caps_score(text: str) -> float | None:
    """Share in [0, 1] of case-changeable letters that are upper case; None if there are none.

    Digits, punctuation, caseless scripts (CJK, Arabic, ...) and letters without an
    upper-case form (``º``, ``ĸ``) cannot show the trait, so they do not count.
    """
    n = n_caps = 0
    for c in text:
        k = _kind(c)
        if k >= 0:
            n += 1
            n_caps += k
    return None if n == 0 else n_caps / n


def caps_transform(text: str) -> str:
    """The ALL-CAPS SFT target: ``str.upper()`` (may change length: ``ß`` -> ``SS``)."""
    return text.upper()
