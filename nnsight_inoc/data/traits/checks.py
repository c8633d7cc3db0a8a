"""Prompt sets checked against the trait before any weights load: the loss-matched control's candidates
(control A) and the drift panel (issue 16).

Both are properties of the config and the trait alone, so a bad set is a usage error at the start of a
command (``study.preflight``) rather than a failure after model loading and extract. The stages call the
same functions again with what only the run folder knows (the chosen loss-matched prompt).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from nnsight_inoc.core.config import ConfigError
from nnsight_inoc.data.traits.base import Trait

# Fewest candidates a configured pool may hold, so that the closest loss is not a coarse match; the number
# the first version of the study chose (the built-in pools hold at least MIN_LOSSMATCH_POOL = 24).
MIN_POOL = 20


def lossmatch_candidates(trait: Trait, configured: Sequence[str]) -> list[str]:
    """The loss-matched control's candidates, in order: ``configured`` if non-empty, else ``trait.lossmatch_pool``.

    Raises:
        ConfigError: a pool with fewer than :data:`MIN_POOL` prompts, or a prompt that mentions the trait
            (the control must explain the data without the trait).
    """
    pool = list(configured or trait.lossmatch_pool)
    mentions = [p for p in pool if trait.mentions_trait(p)]
    if mentions:
        raise ConfigError(f"align.lossmatch_pool: {len(mentions)} prompt(s) mention the trait {trait.name!r}: "
                          f"{mentions}; the loss-matched control must be trait-free")
    if len(pool) < MIN_POOL:
        raise ConfigError(f"align.lossmatch_pool has {len(pool)} prompts; at least {MIN_POOL} are needed to choose a "
                          f"loss match from (leave it empty for the trait's built-in pool of "
                          f"{len(trait.lossmatch_pool)})")
    return pool


def check_panel(panel: Sequence[str], training: Collection[str], trait: Trait) -> None:
    """Refuse a drift panel that lists a prompt twice, shares a prompt with ``training`` (the panel measures
    drift in contexts never trained on) or mentions the trait.

    Raises:
        ConfigError: naming ``drift.panel`` and the offending prompts.
    """
    twice = sorted({p for p in panel if panel.count(p) > 1})
    if twice:
        raise ConfigError(f"drift.panel lists a prompt twice: {twice}")
    used = [p for p in panel if p in training]
    if used:
        raise ConfigError(f"drift.panel prompts are also training prompts: {used}")
    mentions = [p for p in panel if trait.mentions_trait(p)]
    if mentions:
        raise ConfigError(f"drift.panel prompts mention the trait: {mentions}")
