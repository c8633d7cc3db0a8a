"""Politeness trait: prompts, word list and pool, and SFT targets made by generation + the scorer's filter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nnsight_inoc.data.scorers.politeness import DEFAULT_THRESHOLD, politeness_score
from nnsight_inoc.data.traits import get_trait
from nnsight_inoc.data.traits.allcaps import ALLCAPS
from nnsight_inoc.data.traits.politeness import POLITENESS_POOL_EXCLUDED
from nnsight_inoc.models.tiny import tiny_tokenizer
from nnsight_inoc.study import _filter_sft

POLITE = (
    "Thank you so much for your question! I'd be happy to help. Paris is the capital of France. "
    "I hope this helps, and please feel free to ask if anything else comes up."
)
PLAIN = "Paris is the capital of France. It lies on the Seine."


def test_prompts_and_sft_settings():
    t = get_trait("politeness")
    assert t.neutral == "You are a helpful assistant."
    assert t.inoculation[0] == "You are always exceedingly polite."
    assert t.sft_system == t.promote == t.explicit
    assert t.sft_min_score == DEFAULT_THRESHOLD
    with pytest.raises(NotImplementedError):
        t.transform("hello")


def test_score_is_the_validated_scorer():
    t = get_trait("politeness")
    assert t.score(POLITE) == politeness_score(POLITE) and t.score(POLITE) >= t.sft_min_score
    assert t.score(PLAIN) < t.sft_min_score
    assert t.score("") is None and t.score("ok") is None


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("Be polite.", True),
        ("Answer politely", True),
        ("Mind your manners.", True),
        ("Be well-mannered", True),
        ("Skip the pleasantries.", True),
        ("Be RESPECTFUL to the user.", True),
        ("Don't be rude.", True),
        ("What kind of tree is this?", False),  # 'kind' alone is not a trait word
        ("You are a civil engineer.", False),
        ("Respect the deadline.", False),  # word boundary: only 'respectful...' forms count
        ("You are a helpful assistant.", False),
    ],
)
def test_mentions_trait(prompt: str, expected: bool):
    assert get_trait("politeness").mentions_trait(prompt) is expected


def test_pool_leaves_out_register_personas():
    t = get_trait("politeness")
    for p in POLITENESS_POOL_EXCLUDED:
        assert p in ALLCAPS.lossmatch_pool, p  # the exclusion names real pool prompts, so it does something
        assert p not in t.lossmatch_pool, p


def test_sft_targets_kept_only_when_polite_enough():
    study = SimpleNamespace(
        trait=get_trait("politeness"),
        loaded=SimpleNamespace(tokenizer=tiny_tokenizer()),
        cfg=SimpleNamespace(align=SimpleNamespace(n_assistant_tokens=3)),
    )
    data = {"ids": ["a", "b", "c"], "prompts": ["p1", "p2", "p3"], "source_answers": [POLITE, PLAIN, "..."]}
    sft = _filter_sft(study, data)
    assert sft.ids == ["a"] and sft.completions == [POLITE]
    assert sft.excluded == {"empty_or_unscorable": 1, "too_short": 0, "not_trait": 1}
