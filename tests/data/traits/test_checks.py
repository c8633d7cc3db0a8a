"""The prompt-set checks that run before any weights load (nnsight_inoc.data.traits.checks)."""

from __future__ import annotations

import pytest

from nnsight_inoc.core.config import ConfigError
from nnsight_inoc.data.traits import get_trait
from nnsight_inoc.data.traits.checks import MIN_POOL, check_panel, lossmatch_candidates

CAPS = get_trait("allcaps")


def test_empty_configured_pool_means_the_traits_own():
    assert lossmatch_candidates(CAPS, []) == list(CAPS.lossmatch_pool)
    assert len(CAPS.lossmatch_pool) >= MIN_POOL


def test_configured_pool_is_used_in_order_when_large_enough():
    pool = [f"You are assistant number {i}." for i in range(MIN_POOL)]
    assert lossmatch_candidates(CAPS, pool) == pool


def test_small_or_trait_naming_pools_are_usage_errors():
    with pytest.raises(ConfigError, match=f"has {MIN_POOL - 1} prompts; at least {MIN_POOL}"):
        lossmatch_candidates(CAPS, [f"You are assistant number {i}." for i in range(MIN_POOL - 1)])
    leaky = [f"You are assistant number {i}." for i in range(MIN_POOL)] + ["Use ALL CAPS."]
    with pytest.raises(ConfigError, match=r"1 prompt\(s\) mention the trait 'allcaps'"):
        lossmatch_candidates(CAPS, leaky)


def test_panel_checks():
    check_panel([], {"x"}, CAPS)  # no panel: drift under the neutral prompt only
    check_panel(["Answer the question below."], {"You are a helpful assistant."}, CAPS)
    with pytest.raises(ConfigError, match=r"twice: \['A.'\]"):
        check_panel(["A.", "A.", "B."], set(), CAPS)
    with pytest.raises(ConfigError, match=r"also training prompts: \['A.'\]"):
        check_panel(["A.", "B."], {"A."}, CAPS)
    with pytest.raises(ConfigError, match="mention the trait"):
        check_panel(["Reply in ALL CAPS please."], set(), CAPS)
