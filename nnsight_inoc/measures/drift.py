"""Persona drift: post-training behaviour minus pre-training behaviour, on identical inputs.

Two views of the same question ("did training move the model toward the trait?"): the
trait score of greedy answers and the final-prompt projection onto v(l). The measurements
themselves come from :mod:`nnsight_inoc.probes.behaviour`; this module only takes their
difference and refuses to subtract measurements that were not taken on the same inputs.
"""

from __future__ import annotations

from typing import Any


def drift(pre: dict[str, Any], post: dict[str, Any]) -> dict[str, Any]:
    """post minus pre for mean score, share above 0.5 and per-layer projection.

    Raises if the two were measured on different prompts, system prompts or layer counts:
    a difference of unlike measurements is not drift.
    """
    for key in ("prompts", "system_prompt"):
        if pre[key] != post[key]:
            raise ValueError(f"pre and post were measured with different {key}; drift needs the same inputs")
    if len(pre["projection"]) != len(post["projection"]):
        raise ValueError(
            f"projection has {len(pre['projection'])} layers before and {len(post['projection'])} after"
        )
    return {
        "mean_score": post["mean_score"] - pre["mean_score"],
        "share_above_half": post["share_above_half"] - pre["share_above_half"],
        "projection": [b - a for a, b in zip(pre["projection"], post["projection"])],
        "n_unscored": {"pre": pre["n_unscored"], "post": post["n_unscored"]},
    }
