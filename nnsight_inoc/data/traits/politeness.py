"""Marked politeness: the weak trait on this model (SFT targets rewritten by the model itself)."""

from __future__ import annotations

from dataclasses import dataclass

from nnsight_inoc.data.scorers.politeness import (
    DEFAULT_THRESHOLD as POLITENESS_THRESHOLD,
)
from nnsight_inoc.data.scorers.politeness import politeness_score
from nnsight_inoc.data.traits.base import SHARED_LOSSMATCH_POOL, Trait, register


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
        *(p for p in SHARED_LOSSMATCH_POOL if p not in POLITENESS_POOL_EXCLUDED),
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

register(POLITENESS)
