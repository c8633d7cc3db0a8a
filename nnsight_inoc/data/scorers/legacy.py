"""The ALL-CAPS and Spanish scorers as published before issue 18, frozen for comparisons.

Why keep them: the published numbers (``results/``) were computed with these, and the
rescoring script and the validation tests compare the fixed scorers against them. They are
copies of ``AllCapsTrait.score`` and ``SpanishTrait.score`` at commit d398492, so the
comparison does not change when the trait modules switch to :mod:`nnsight_inoc.data.scorers.caps`
and :mod:`nnsight_inoc.data.scorers.spanish`. Not for new measurements: their faults are in
those modules' docstrings.
"""

from __future__ import annotations

from functools import lru_cache


def old_caps_score(text: str) -> float | None:
    """Upper-case share of letters passing isupper() or islower() (counts 'º', which has no upper case)."""
    cased = [c for c in text if c.isalpha() and (c.isupper() or c.islower())]
    if not cased:
        return None
    return sum(c.isupper() for c in cased) / len(cased)


@lru_cache(maxsize=1)
def _old_identifier():  # loaded once (about 0.5 s), not at import time
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(["en", "es"])
    return ident


def old_spanish_score(text: str) -> float | None:
    """py3langid's P(es) with only en and es allowed; None for text without letters."""
    if not any(c.isalpha() for c in text):
        return None
    lang, p = _old_identifier().classify(text)
    return float(p if lang == "es" else 1.0 - p)
