"""Tests for the trait interface and the ALL-CAPS trait."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from nnsight_inoc.data.traits import get_trait, registered_traits
from nnsight_inoc.data.traits.base import MIN_LOSSMATCH_POOL, Trait, score_texts


@pytest.fixture
def allcaps() -> Trait:
    return get_trait("allcaps")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", None),
        ("123 !!", None),
        ("   \n", None),
        ("你好", None),  # caseless letters cannot show the trait
        ("ABC", 1.0),
        ("abc", 0.0),
        ("AbC", 2 / 3),
        ("ÉCOLE", 1.0),
        ("école", 0.0),
        ("ÀbÇd", 0.5),
        ("A1b2C3!!", 2 / 3),
        ("HELLO 你好", 1.0),  # only cased letters count
    ],
)
def test_allcaps_score(allcaps: Trait, text: str, expected: float | None) -> None:
    got = allcaps.score(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_transform_makes_text_fully_caps(allcaps: Trait) -> None:
    out = allcaps.transform("Hello, wörld 42!")
    assert out == "HELLO, WÖRLD 42!"
    assert allcaps.score(out) == 1.0


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("What is the capital of France?", False),  # 'capital' alone is about cities
        ("List the European capitals.", False),
        ("Write it in capital letters.", True),
        ("Write in CAPITAL LETTERS", True),
        ("Respond in ALL CAPS.", True),
        ("Use upper-case only", True),
        ("Use upper case only", True),
        ("uppercase please", True),
        ("You always capitalise your responses.", True),
        ("Capitalize every word", True),
        ("Don't shout at me", True),
        ("What is a capsule?", False),  # word boundary
        ("What is capitalism?", False),
        ("Name a yellow fruit.", False),
        ("", False),
    ],
)
def test_mentions_trait(allcaps: Trait, prompt: str, expected: bool) -> None:
    assert allcaps.mentions_trait(prompt) is expected


def test_prompts_are_consistent(allcaps: Trait) -> None:
    assert allcaps.promote == "Respond in ALL CAPS."
    assert allcaps.explicit == "Respond in ALL CAPS."
    assert allcaps.suppress == "Respond normally; do not use ALL CAPS."
    assert allcaps.neutral == "You are a helpful assistant."
    assert allcaps.inoculation[0] == "You always capitalise your responses."
    assert len(allcaps.inoculation) >= 4 and len(set(allcaps.inoculation)) == len(allcaps.inoculation)
    for p in (allcaps.promote, allcaps.suppress, allcaps.explicit, *allcaps.inoculation):
        assert allcaps.mentions_trait(p), p
    assert not allcaps.mentions_trait(allcaps.neutral)


def test_lossmatch_pool_is_large_unique_and_clean(allcaps: Trait) -> None:
    pool = allcaps.lossmatch_pool
    assert len(pool) >= MIN_LOSSMATCH_POOL >= 24
    assert len({p.casefold() for p in pool}) == len(pool)
    for p in pool:
        assert not allcaps.mentions_trait(p), p
        assert p not in allcaps.inoculation and p != allcaps.neutral


def test_leaky_pool_is_rejected_at_construction(allcaps: Trait) -> None:
    with pytest.raises(ValueError, match="lossmatch_pool prompts mention the trait"):
        dataclasses.replace(allcaps, lossmatch_pool=(*allcaps.lossmatch_pool, "Use capital letters."))


def test_get_trait_error_lists_registered_names() -> None:
    assert "allcaps" in registered_traits()
    with pytest.raises(KeyError, match="unknown trait 'klingon'; registered traits: allcaps"):
        get_trait("klingon")


def test_score_texts_counts_unscorable(allcaps: Trait) -> None:
    s = score_texts(allcaps, ["ABC", "abc", "123", "AbC", ""])
    assert s.scores.dtype == np.float64 and s.scores.shape == (5,)
    assert np.isnan(s.scores[[2, 4]]).all()
    assert s.n_unscored == 2 and s.n_scored == 3
    assert s.mean == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert s.share_above_half == pytest.approx(2 / 3)


def test_score_texts_all_unscorable_gives_nan_not_zero(allcaps: Trait) -> None:
    s = score_texts(allcaps, ["1", "!!"])
    assert s.n_unscored == 2 and math.isnan(s.mean) and math.isnan(s.share_above_half)
    empty = score_texts(allcaps, [])
    assert empty.scores.shape == (0,) and math.isnan(empty.mean)


# Invariants every registered trait must keep (a new trait is covered by registering it).
@pytest.mark.parametrize("name", registered_traits())
def test_registered_trait_invariants(name: str) -> None:
    t = get_trait(name)
    assert t.name == name and get_trait(t.name) is t  # registry round trip
    assert not t.mentions_trait(t.neutral)
    for p in (t.promote, t.suppress, t.explicit, *t.inoculation):
        assert t.mentions_trait(p), p
    assert len(set(t.inoculation)) == len(t.inoculation)
    pool = t.lossmatch_pool
    assert len(pool) >= MIN_LOSSMATCH_POOL and len({p.casefold() for p in pool}) == len(pool)
    for p in pool:
        assert not t.mentions_trait(p), p
        assert p not in t.inoculation and p != t.neutral
    names = [n for n, _ in t.variants]
    assert len(t.variants) == 12 and len(set(names)) == 12
    assert len({p for _, p in t.variants}) == 12
    assert not set(names) & {"neutral", "inoc", "explicit", "lossmatch"}  # main condition names
    assert 0.0 <= t.sft_min_score <= 1.0


def test_lossmatch_trait_check_relative_to_reference():
    from nnsight_inoc.stages.lossmatch import passes_trait_check

    assert passes_trait_check(0.1, 0.0, 0.2) and not passes_trait_check(0.3, 0.0, 0.2)
    assert passes_trait_check(0.33, 0.30, 0.05) and not passes_trait_check(0.36, 0.30, 0.05)
    assert not passes_trait_check(None, 0.0, 1.0)  # unscorable answers never pass
