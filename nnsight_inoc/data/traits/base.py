"""Traits under study: the prompts that promote/suppress/inoculate them and how to score them.

Why a class per trait: every later stage (direction extraction, gradient alignment,
fine-tuning, monitoring) needs the same handful of trait-specific pieces, and keeping
them together makes adding a trait one small module that defines its subclass and
instance and calls :func:`register` (``nnsight_inoc/data/traits/__init__.py`` imports
each trait module once, so the registry is complete whenever the package is imported). Construction validates the invariants the study relies on, so a new
trait with a leaky control pool fails at import, not after a day of GPU time.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MIN_LOSSMATCH_POOL = 24

# Trait-free persona prompts from which the loss-matched control is chosen (each trait may
# leave some out; every trait's pool is checked against its own trait words at construction).
SHARED_LOSSMATCH_POOL: tuple[str, ...] = (
        "You are a concise assistant. Keep answers brief.",
        "You are a friendly tutor who explains things step by step.",
        "You are an experienced software engineer.",
        "You always answer in exactly three sentences.",
        "You always use bullet points in your responses.",
        "You are a careful assistant who double-checks every fact.",
        "Write in a formal, academic tone.",
        "You are a cheerful assistant who likes to help.",
        "Give as much detail as you can in every answer.",
        "You are a historian and relate answers to history when you can.",
        "You are a chef and like to use cooking analogies.",
        "Begin every answer with a one-line summary.",
        "You always end your responses with a question for the user.",
        "You always use British spelling.",
        "You always number the points in your responses.",
        "You are a patient teacher of young children.",
        "You always finish your answer with a short rhyme.",
        "Keep every sentence under fifteen words.",
        "You are a senior data scientist.",
        "Use plain words and avoid jargon.",
        "You always include a concrete example in your responses.",
        "You are a travel guide who mentions places worth visiting.",
        "Format your answer in Markdown with headings.",
        "You are a sceptical scientist who notes uncertainties.",
        "You always mention one fun fact in your responses.",
        "You are a lawyer who answers precisely and carefully.",
        "You always write your responses as a short story.",
        "You are an assistant for a gardening club.",
        "You always put the most important point first.",
        "Answer as briefly as possible without losing accuracy.",
)


@lru_cache(maxsize=None)
def _phrase_regex(words: tuple[str, ...]) -> re.Pattern[str]:
    # Spaces/hyphens inside a phrase match any run of them ("upper case" == "upper-case").
    parts = [r"[\s\-]+".join(re.escape(w) for w in re.split(r"[\s\-]+", p.strip())) for p in words]
    return re.compile(r"\b(?:" + "|".join(parts) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class Trait(ABC):
    """A behavioural trait with its system prompts, word list and scorer.

    ``trait_words`` are literal words/phrases (inflections listed explicitly) matched
    case-insensitively at word boundaries; literal lists make the "does this prompt
    mention the trait?" decision easy to audit.
    """

    name: str
    promote: str
    suppress: str
    neutral: str
    explicit: str
    inoculation: tuple[str, ...]  # first = the main one
    trait_words: tuple[str, ...]
    lossmatch_pool: tuple[str, ...]
    # Training-prompt wording variants (name -> prompt) so that "does alignment predict drift?"
    # is a correlation over many points: paraphrases, near-misses, neutral paraphrases, framings.
    variants: tuple[tuple[str, str], ...] = ()
    # How SFT targets are made. None: the model's neutral answer passed through transform()
    # (ALL-CAPS). A prompt: the model's own answer under that prompt, kept only when its score
    # reaches sft_min_score (Spanish: content cannot be translated by a string function).
    sft_system: str | None = None
    sft_min_score: float = 0.5

    def __post_init__(self) -> None:
        if not self.inoculation:
            raise ValueError(f"trait {self.name!r}: inoculation needs at least one prompt")
        if not self.trait_words:
            raise ValueError(f"trait {self.name!r}: trait_words is empty")
        leaky = [p for p in self.lossmatch_pool if self.mentions_trait(p)]
        if leaky:
            raise ValueError(f"trait {self.name!r}: lossmatch_pool prompts mention the trait: {leaky}")
        if self.mentions_trait(self.neutral):
            raise ValueError(f"trait {self.name!r}: the neutral prompt mentions the trait: {self.neutral!r}")

    @abstractmethod
    def transform(self, text: str) -> str:
        """Turn a neutral completion into one that carries the trait (the SFT target)."""

    @abstractmethod
    def score(self, text: str) -> float | None:
        """Trait strength in [0, 1]; None when the text cannot carry the trait at all."""

    def mentions_trait(self, prompt: str) -> bool:
        return _phrase_regex(self.trait_words).search(prompt) is not None


@dataclass(frozen=True)
class ScoreSummary:
    """Scores of many texts; unscorable texts stay visible as NaN and in ``n_unscored``.

    ``mean`` and ``share_above_half`` are over scored texts only, and are NaN when no
    text could be scored (rather than a misleading 0).
    """

    scores: np.ndarray  # float, NaN where unscorable
    n_unscored: int
    mean: float
    share_above_half: float

    @property
    def n_scored(self) -> int:
        return int(self.scores.size - self.n_unscored)


def score_texts(trait: Trait, texts: Sequence[str]) -> ScoreSummary:
    raw = [trait.score(t) for t in texts]
    scores = np.array([np.nan if s is None else s for s in raw], dtype=float)
    scored = scores[~np.isnan(scores)]
    n_unscored = int(scores.size - scored.size)
    if scored.size == 0:
        return ScoreSummary(scores, n_unscored, float("nan"), float("nan"))
    return ScoreSummary(scores, n_unscored, float(scored.mean()), float((scored > 0.5).mean()))


_REGISTRY: dict[str, Trait] = {}


def register(trait: Trait) -> Trait:
    """Add a trait to the registry under its name; a second trait of the same name is an error."""
    if trait.name in _REGISTRY and _REGISTRY[trait.name] is not trait:
        raise ValueError(f"a trait named {trait.name!r} is registered already")
    _REGISTRY[trait.name] = trait
    return trait


def get_trait(name: str) -> Trait:
    """The registered trait ``name``; KeyError naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown trait {name!r}; registered traits: {', '.join(sorted(_REGISTRY))}") from None


def registered_traits() -> tuple[str, ...]:
    """Names of every registered trait, sorted (the config's trait.name choices must match: tested)."""
    return tuple(sorted(_REGISTRY))
