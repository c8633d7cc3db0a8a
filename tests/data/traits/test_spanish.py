"""Spanish trait: the language-ID scorer on hand-checked texts, and SFT targets made by generation + filter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nnsight_inoc.data.traits import get_trait, score_texts
from nnsight_inoc.models.tiny import tiny_tokenizer
from nnsight_inoc.study import _filter_sft

SPANISH_TEXTS = [
    "Hola, ¿cómo estás hoy?",
    "París es la capital de Francia.",
    "Para hacer una tortilla, necesitas huevos, patatas y aceite de oliva.",
    "Las plantas necesitan luz, agua y nutrientes para crecer.",
]
ENGLISH_TEXTS = [
    "Hello, how are you today?",
    "Paris is the capital of France.",
    "To make an omelette you need eggs, potatoes and olive oil.",
    "Plants need light, water and nutrients to grow.",
]


def test_scorer_separates_hand_checked_examples():
    t = get_trait("spanish")
    assert all(t.score(x) > 0.95 for x in SPANISH_TEXTS)
    assert all(t.score(x) < 0.05 for x in ENGLISH_TEXTS)
    assert t.score("1234 !!") is None and t.score("") is None
    s = score_texts(t, SPANISH_TEXTS + ["42"])
    assert s.n_unscored == 1 and s.share_above_half == 1.0


def test_trait_prompts_are_clean_and_complete():
    t = get_trait("spanish")
    assert len(t.lossmatch_pool) >= 20 and not any(t.mentions_trait(p) for p in t.lossmatch_pool)
    assert t.mentions_trait("You always speak in Spanish.") and t.mentions_trait("Responde en español")
    assert len(t.variants) >= 12 and t.sft_system == "Respond in Spanish."
    with pytest.raises(NotImplementedError):
        t.transform("hello")


def test_sft_targets_kept_only_when_spanish():
    study = SimpleNamespace(
        trait=get_trait("spanish"),
        loaded=SimpleNamespace(tokenizer=tiny_tokenizer()),
        cfg=SimpleNamespace(align=SimpleNamespace(n_assistant_tokens=3)),
    )
    data = {
        "ids": ["a", "b", "c"],
        "prompts": ["p1", "p2", "p3"],
        "source_answers": [SPANISH_TEXTS[2], ENGLISH_TEXTS[2], "..."],
    }
    sft = _filter_sft(study, data)
    assert sft.ids == ["a"] and sft.completions == [SPANISH_TEXTS[2]]
    assert sft.excluded == {"empty_or_unscorable": 1, "too_short": 0, "not_trait": 1}
