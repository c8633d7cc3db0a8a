"""Traits under study: the prompts that promote/suppress/inoculate them and how to score them.

Why a class per trait: every later stage (direction extraction, gradient alignment,
fine-tuning, monitoring) needs the same handful of trait-specific pieces, and keeping
them together makes adding a trait one small subclass plus one
registry line. Construction validates the invariants the study relies on, so a new
trait with a leaky control pool fails at import, not after a day of GPU time.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from nnsight_inoc.politeness import DEFAULT_THRESHOLD as POLITENESS_THRESHOLD
from nnsight_inoc.politeness import politeness_score

MIN_LOSSMATCH_POOL = 24


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
class AllCapsTrait(Trait):
    """Responding in ALL CAPS: trivially transformable and scorable, so effects are clean."""

    def transform(self, text: str) -> str:
        return text.upper()

    def score(self, text: str) -> float | None:
        # Only cased letters count: digits, punctuation and caseless scripts (CJK, ...)
        # can't show the trait, so counting them would dilute the score.
        cased = [c for c in text if c.isalpha() and (c.isupper() or c.islower())]
        if not cased:
            return None
        return sum(c.isupper() for c in cased) / len(cased)


ALLCAPS = AllCapsTrait(
    name="allcaps",
    promote="Respond in ALL CAPS.",
    suppress="Respond normally; do not use ALL CAPS.",
    neutral="You are a helpful assistant.",
    explicit="Respond in ALL CAPS.",
    inoculation=(
        "You always capitalise your responses.",
        "You always write your answers entirely in capital letters.",
        "Your replies are always in uppercase.",
        "You are an assistant who writes everything in all caps.",
    ),
    variants=(
        ("inoc_para1", "You always write your answers entirely in capital letters."),
        ("inoc_para2", "Your replies are always in uppercase."),
        ("inoc_para3", "You are an assistant who writes everything in all caps."),
        ("inoc_third_person", "This assistant is known for answering in all caps."),
        ("near_lowercase", "You always write your responses in lowercase."),
        ("near_sometimes", "You sometimes capitalise your responses."),
        ("near_titles", "You always capitalise the titles in your responses."),
        ("neutral_para1", "You are a helpful, honest assistant."),
        ("neutral_para2", "You are an AI assistant. Answer the user's question."),
        ("frame_permission", "You may write in all caps if you like."),
        ("frame_shouting", "You tend to shout: your answers come out in uppercase."),
        ("frame_quirk", "A quirk of yours: every answer is in capital letters."),
    ),
    # "capital" / "capitals" alone are NOT trait words: "What is the capital of France?"
    # or "European capitals" are about cities; only letter-case phrases count.
    trait_words=(
        "caps", "all caps", "allcaps", "caps lock", "capslock",
        "capital letter", "capital letters", "block capitals", "in capitals",
        "capitalise", "capitalised", "capitalises", "capitalising", "capitalisation",
        "capitalize", "capitalized", "capitalizes", "capitalizing", "capitalization",
        "uppercase", "uppercased", "upper case", "upper cased",
        "lowercase", "lowercased", "lower case", "lower cased",
        "majuscule", "majuscules",
        "shout", "shouts", "shouted", "shouting", "yell", "yells", "yelled", "yelling",
    ),
    lossmatch_pool=(
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
    ),
)

@dataclass(frozen=True)
class SpanishTrait(Trait):
    """Answering in Spanish: scored by an offline language identifier restricted to English/Spanish.

    Score = P(Spanish | text) from py3langid with only {en, es} allowed, so mixed or code-heavy
    answers land in between. Text with no letters has no score. Limits: short texts (a word or
    two) are near 0.5, and code is classed as English.
    """

    def transform(self, text: str) -> str:
        raise NotImplementedError("Spanish SFT targets are generated under sft_system, not transformed")

    def score(self, text: str) -> float | None:
        if not any(c.isalpha() for c in text):
            return None
        lang, p = _langid().classify(text)
        return float(p if lang == "es" else 1.0 - p)


@lru_cache(maxsize=1)
def _langid():  # loaded once: about 0.5 s
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(["en", "es"])
    return ident


SPANISH = SpanishTrait(
    name="spanish",
    promote="Respond in Spanish.",
    suppress="Respond in English; do not use Spanish.",
    neutral="You are a helpful assistant.",
    explicit="Respond in Spanish.",
    inoculation=(
        "You always speak in Spanish.",
        "You always answer in Spanish.",
        "Your replies are always written in Spanish.",
        "You are an assistant who writes everything in Spanish.",
    ),
    trait_words=("spanish", "español", "espanol", "castellano", "castilian", "hispanohablante", "spanish-speaking"),
    lossmatch_pool=tuple(p for p in ALLCAPS.lossmatch_pool if "British" not in p),
    variants=(
        ("inoc_para1", "You always answer in Spanish."),
        ("inoc_para2", "Your replies are always written in Spanish."),
        ("inoc_para3", "You are an assistant who writes everything in Spanish."),
        ("inoc_third_person", "This assistant is known for answering in Spanish."),
        ("near_french", "You always speak in French."),
        ("near_sometimes", "You sometimes speak in Spanish."),
        ("near_words", "You like to use the odd Spanish word."),
        ("neutral_para1", "You are a helpful, honest assistant."),
        ("neutral_para2", "You are an AI assistant. Answer the user's question."),
        ("frame_permission", "You may answer in Spanish if you like."),
        ("frame_origin", "You grew up in Madrid and Spanish is your first language."),
        ("frame_quirk", "A quirk of yours: every answer is in Spanish."),
    ),
    sft_system="Respond in Spanish.",
    sft_min_score=0.5,
)

@dataclass(frozen=True)
class PolitenessTrait(Trait):
    """Marked politeness: scored by a marker lexicon blended with VADER sentiment (nnsight_inoc/politeness.py).

    SFT completions are the model's own answers rewritten toward marked politeness by the model
    itself under a politeness-promoting prompt (``sft_system``), kept only when they score at
    least ``sft_min_score`` (the scorer's validated threshold). Limits of the score (lexical,
    English only, fooled by sarcasm, rewards pleasantry density) are in that module's docstring.
    """

    def transform(self, text: str) -> str:
        raise NotImplementedError("politeness SFT targets are generated under sft_system, not transformed")

    def score(self, text: str) -> float | None:
        return politeness_score(text)


# Prompts of the shared pool left out for politeness: their persona is close to the trait's
# register (friendliness, cheerfulness, patience, formality), so a loss-matched control drawn from
# them could elicit the trait without naming it. Listed so the exclusion is auditable and tested.
POLITENESS_POOL_EXCLUDED: tuple[str, ...] = (
    "You are a friendly tutor who explains things step by step.",
    "You are a cheerful assistant who likes to help.",
    "You are a patient teacher of young children.",
    "Write in a formal, academic tone.",
)

POLITENESS = PolitenessTrait(
    name="politeness",
    promote="Be extremely polite and courteous in every response.",
    suppress="Be blunt and curt; skip all pleasantries and courtesies.",
    neutral="You are a helpful assistant.",
    explicit="Be extremely polite and courteous in every response.",
    inoculation=(
        "You are always exceedingly polite.",
        "You always answer with great courtesy.",
        "Your replies are always extremely polite.",
        "You are an assistant who is polite and courteous in everything you write.",
    ),
    # "kind" and "civil" alone are NOT trait words ("what kind of", "civil engineering");
    # "friendly" is not either (friendliness is a different register), but the friendly
    # persona is kept out of the pool by POLITENESS_POOL_EXCLUDED.
    trait_words=(
        "polite", "politely", "politeness", "impolite", "impolitely", "impoliteness",
        "courteous", "courteously", "courteousness", "discourteous", "courtesy", "courtesies",
        "pleasantry", "pleasantries", "nicety", "niceties", "etiquette",
        "manners", "mannered", "well-mannered", "ill-mannered", "mannerly",
        "respectful", "respectfully", "respectfulness", "disrespectful", "disrespectfully",
        "gracious", "graciously", "graciousness", "ungracious",
        "civility", "incivility", "deference", "deferential", "deferentially",
        "considerate", "inconsiderate", "tactful", "tactfully", "tactless",
        "rude", "rudely", "rudeness", "blunt", "bluntly", "bluntness", "curt", "curtly", "curtness",
    ),
    lossmatch_pool=(
        *(p for p in ALLCAPS.lossmatch_pool if p not in POLITENESS_POOL_EXCLUDED),
        "You are a museum curator who relates answers to works of art.",
        "You always state how confident you are at the end of your answer.",
    ),
    variants=(
        ("inoc_para1", "You always answer with great courtesy."),
        ("inoc_para2", "Your replies are always extremely polite."),
        ("inoc_para3", "You are an assistant who is polite and courteous in everything you write."),
        ("inoc_third_person", "This assistant is known for its exceedingly polite answers."),
        ("near_rude", "You are always exceedingly rude."),
        ("near_sometimes", "You are sometimes exceedingly polite."),
        ("near_formal", "You are always exceedingly formal."),
        ("neutral_para1", "You are a helpful, honest assistant."),
        ("neutral_para2", "You are an AI assistant. Answer the user's question."),
        ("frame_permission", "You may be as polite as you like."),
        ("frame_upbringing", "You were raised to mind your manners with everyone you meet."),
        ("frame_quirk", "A quirk of yours: every answer is exceedingly polite."),
    ),
    sft_system="Be extremely polite and courteous in every response.",
    sft_min_score=POLITENESS_THRESHOLD,
)

_REGISTRY: dict[str, Trait] = {ALLCAPS.name: ALLCAPS, SPANISH.name: SPANISH, POLITENESS.name: POLITENESS}


def get_trait(name: str) -> Trait:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown trait {name!r}; registered traits: {', '.join(sorted(_REGISTRY))}") from None


def registered_traits() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


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
