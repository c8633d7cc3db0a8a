"""Traits under study, one module each; importing this package registers all of them.

Use :func:`get_trait` to look one up by the config's ``trait.name``.
"""

from __future__ import annotations

from nnsight_inoc.data.traits import (  # noqa: F401  (each registers itself)
    allcaps,
    politeness,
    spanish,
)
from nnsight_inoc.data.traits.base import (
    ScoreSummary,
    Trait,
    get_trait,
    register,
    registered_traits,
    score_texts,
)

__all__ = ["ScoreSummary", "Trait", "get_trait", "register", "registered_traits", "score_texts"]
