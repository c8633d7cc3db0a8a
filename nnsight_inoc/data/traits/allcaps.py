"""ALL-CAPS, the main trait: trivially transformable and scorable, so effects are clean."""

from __future__ import annotations

from dataclasses import dataclass

from nnsight_inoc.data.scorers.caps import caps_score, caps_transform
from nnsight_inoc.data.traits.base import SHARED_LOSSMATCH_POOL, Trait, register


@dataclass(frozen=True)
class AllCapsTrait(Trait):
    """Responding in ALL CAPS: trivially transformable and scorable, so effects are clean."""

    def transform(self, text: str) -> str:
        return caps_transform(text)

    def score(self, text: str) -> float | None:
        """Upper-case share of the letters whose case can change (:func:`~nnsight_inoc.data.scorers.caps.caps_score`)."""
        return caps_score(text)


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
    lossmatch_pool=SHARED_LOSSMATCH_POOL,
)

register(ALLCAPS)
