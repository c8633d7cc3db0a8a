"""Politeness scorer: a lexicon of politeness markers blended with VADER sentiment.

Why this shape: the politeness trait needs a score in [0, 1] that runs offline, in
milliseconds, on thousands of short English assistant answers, and whose every point
can be traced to a phrase. Trained politeness classifiers (e.g. the Stanford
politeness corpus models) need model downloads and are opaque; a lexicon is
auditable and VADER (a rule-based sentiment model whose lexicon ships in its wheel)
adds the warmth of the wording that marker phrases miss.

Formula (constants below)::

    d     = n_markers / n_sentences                   # politeness markers per sentence
    M     = 1 - exp(-d / MARKER_SCALE)                # saturating: 0 at no markers, -> 1
    S     = (compound + 1) / 2                        # VADER compound in [-1, 1] -> [0, 1]
    score = MARKER_WEIGHT * M + (1 - MARKER_WEIGHT) * S

``n_markers`` counts non-overlapping matches of :data:`MARKERS` (case-insensitive, at
word boundaries, longest phrase first, so "thank you so much" counts once);
``n_sentences`` counts sentence-like pieces (split at . ! ? and line breaks) that hold
a letter. Texts with fewer than :data:`MIN_WORDS` words have no score (None): a word
or two cannot show a register. The score is monotone non-decreasing in the marker
count at fixed sentence count and sentiment, and lies in [0, 1].

The constants were fixed before the hand-labelled validation set
(``tests/fixtures/politeness_validation.json``) was scored, and were not tuned on it;
``tests/test_politeness.py`` measures AUROC and accuracy at :data:`DEFAULT_THRESHOLD`
on that set.

Limits (a lexical proxy, not a judgement of politeness):
- English only; other languages score on VADER's English lexicon and find no markers.
- Lexical: politeness carried by content or structure (acknowledging the user's
  situation, careful softening without stock phrases) scores low; a blunt answer
  with a stock "please" or "of course" scores higher than it should.
- Fooled by sarcasm and by formulaic courtesy ("Thanks so much for asking such an
  obvious question").
- Rewards the density of pleasantries: an answer padded with "I hope this helps!"
  scores higher than a courteous answer with more content per sentence; long
  technical answers (code lines count as sentences) are pushed towards the
  sentiment-only floor.
- VADER reads some neutral words as negative ("lower" and "pressure" are -1.2, "lies" as
  in "it lies on the border" is -1.8), so plain factual answers can score below the
  neutral 0.2; it does not matter for the polite/plain split. "sorry" is -0.3 in its
  lexicon, so an apology adds a marker but slightly lowers the sentiment part.
- Some markers are ambiguous ("of course" as a discourse filler, "could you" inside
  code comments); VADER's compound saturates on long texts, so on them it mostly
  separates negative from non-negative wording.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

# Politeness markers, literal phrases (inflections and both spellings listed explicitly).
# Straight and curly apostrophes are normalised before matching.
MARKERS: tuple[str, ...] = (
    # requests and deference
    "please", "kindly", "if you don't mind", "if you do not mind", "would you mind", "if i may",
    "would you", "could you", "may i", "if you'd like", "if you would like", "if you like",
    "if you prefer", "you might want to", "you may want to", "you might consider", "perhaps",
    "pardon", "excuse me", "respectfully", "with respect",
    # thanks and appreciation
    "thank you", "thank you so much", "thank you very much", "thanks", "thanks so much", "many thanks",
    "i appreciate", "i really appreciate", "i truly appreciate", "much appreciated", "appreciate your",
    # willingness and pleasure
    "i'd be happy to", "i would be happy to", "i'm happy to", "i am happy to", "happy to help",
    "i'd be glad to", "i would be glad to", "i'm glad", "i am glad", "glad to help", "gladly",
    "i'd be delighted", "i would be delighted", "delighted to", "my pleasure", "it's a pleasure",
    "it is a pleasure", "you're welcome", "you are welcome", "certainly", "of course",
    # apologies
    "i apologise", "i apologize", "i apologise for", "i apologize for", "apologies", "my apologies",
    "sorry", "i'm sorry", "i am sorry",
    # encouragement and well-wishing
    "great question", "good question", "excellent question", "wonderful question", "thoughtful question",
    "i hope this helps", "i hope that helps", "hope this helps", "hope that helps", "i hope this is helpful",
    "feel free", "please don't hesitate", "don't hesitate", "do not hesitate", "i understand",
    "best wishes", "warm regards", "kind regards", "have a wonderful day", "have a great day",
    "have a nice day", "take care", "wishing you", "good luck",
)


MARKER_WEIGHT = 0.6  # share of the score from marker density; the rest is VADER sentiment
MARKER_SCALE = 0.5  # markers per sentence at which M = 1 - 1/e (about 0.63)
MIN_WORDS = 2  # fewer words than this: no score


# Polite vs not, also the politeness trait's SFT keep threshold. Chosen on the validation set: the
# midpoint-ish round value between the highest-scoring plain answer (0.64, a blunt "..., please.")
# and the lowest-scoring polite answer that uses marker phrases (0.76); polite answers without
# marker phrases fall below it by construction (see Limits). Conservative on purpose: SFT
# targets should be markedly polite, not merely free of negative words.
DEFAULT_THRESHOLD = 0.7
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_SENTENCE_SPLIT = re.compile(r"(?:[.!?]+(?=\s|$))|\n+")


@lru_cache(maxsize=1)
def _marker_regex() -> re.Pattern[str]:
    phrases = sorted(set(MARKERS), key=len, reverse=True)  # longest first: one match per phrase use
    parts = [r"\s+".join(re.escape(w) for w in p.split()) for p in phrases]
    return re.compile(r"\b(?:" + "|".join(parts) + r")\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _vader():  # loaded once (reads the lexicon file, about 0.1 s); not at import time
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@dataclass(frozen=True)
class PolitenessParts:
    """The pieces of one score, kept so a surprising score can be explained."""

    n_markers: int
    n_sentences: int
    compound: float  # VADER compound, [-1, 1]
    score: float


def combine(n_markers: int, n_sentences: int, compound: float) -> float:
    """The documented formula (module docstring); pure so its edges can be tested directly."""
    if n_markers < 0 or n_sentences < 1:
        raise ValueError(f"need n_markers >= 0 and n_sentences >= 1 (got {n_markers}, {n_sentences})")
    if not -1.0 <= compound <= 1.0:
        raise ValueError(f"VADER compound must be in [-1, 1] (got {compound})")
    marker_part = 1.0 - math.exp(-(n_markers / n_sentences) / MARKER_SCALE)
    sentiment_part = (compound + 1.0) / 2.0
    return MARKER_WEIGHT * marker_part + (1.0 - MARKER_WEIGHT) * sentiment_part


def count_markers(text: str) -> int:
    return len(_marker_regex().findall(text.translate(_APOSTROPHES)))


def count_sentences(text: str) -> int:
    return sum(1 for piece in _SENTENCE_SPLIT.split(text) if any(c.isalpha() for c in piece))


def politeness_parts(text: str) -> PolitenessParts | None:
    """Score with its parts; None when the text has fewer than MIN_WORDS words."""
    norm = text.translate(_APOSTROPHES)
    if len(_WORD.findall(norm)) < MIN_WORDS:
        return None
    n_markers = count_markers(norm)
    n_sentences = max(1, count_sentences(norm))
    compound = float(_vader().polarity_scores(norm)["compound"])
    return PolitenessParts(n_markers, n_sentences, compound, combine(n_markers, n_sentences, compound))


def politeness_score(text: str) -> float | None:
    """Politeness in [0, 1] (formula in the module docstring); None for empty or near-empty text."""
    parts = politeness_parts(text)
    return None if parts is None else parts.score
