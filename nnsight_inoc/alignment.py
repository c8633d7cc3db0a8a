"""Gradient-vs-direction metrics and the random-direction null accumulator.

Sign convention, used in every table and plot: we report quantities of ``-g``,
the direction a gradient-descent step moves the activation. ``cos(-g, v) > 0``
means training pushes the residual stream toward the trait; the hypothesis is
that an inoculation prompt lowers this cosine relative to a neutral prompt.
The cosine, not the projection or the norm, is the test: the projection scales
with the loss (a prompt that explains the data away shrinks every gradient), so
only the angle separates "rotated away from the trait" from "smaller overall".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .chat import Batch
from .controls_stats import random_unit_directions

SIGN_NOTE = "cos(-g, v): -g is the direction a gradient step moves the activation; > 0 = toward the trait"


def position_names(n_assistant: int) -> list[str]:
    """Gradient positions: final prompt token, each assistant token, and their sum."""
    return ["final_prompt"] + [f"a{i + 1}" for i in range(n_assistant)] + ["a_sum"]


def gradient_index(batch: Batch) -> torch.Tensor:
    """(B, 1 + k) absolute positions: the final prompt token then the first k assistant tokens."""
    if (batch.assistant_idx < 0).any():
        short = int((batch.assistant_idx < 0).any(1).sum())
        raise ValueError(
            f"{short} example(s) have fewer completion tokens than the {batch.assistant_idx.shape[1]} "
            "assistant positions measured; filter them out explicitly (and report the count)"
        )
    return torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], dim=1)


def with_sum(grads: torch.Tensor) -> torch.Tensor:
    """Append the sum of the assistant-token gradients: (B, L, 1 + k, d) -> (B, L, 2 + k, d)."""
    return torch.cat([grads, grads[:, :, 1:].sum(2, keepdim=True)], dim=2)


@dataclass
class Metrics:
    proj: torch.Tensor  # (B, L, P) <-g, v>
    norm: torch.Tensor  # (B, L, P) |g|
    cos: torch.Tensor  # (B, L, P) cos(-g, v)


def metrics(grads: torch.Tensor, v: torch.Tensor) -> Metrics:
    """Projection, norm and cosine of -g against unit v (L, d), per example/layer/position.

    A zero gradient has no angle: its cosine is NaN, and the caller must count it.
    """
    g = -grads.double()
    vv = v.double()
    proj = torch.einsum("blpd,ld->blp", g, vv)
    norm = g.norm(dim=-1)
    cos = torch.where(norm > 0, proj / (norm * vv.norm(dim=-1)[None, :, None]), torch.nan)
    return Metrics(proj.float(), norm.float(), cos.float())


@dataclass
class RandomNull:
    """Running sums of cos(-g, r) for K random unit directions per layer and condition.

    Only per-condition means are needed for the null of the condition difference in
    mean cosine, so nothing per-example is stored.
    """

    dirs: torch.Tensor  # (L, K, d) unit rows
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # condition -> (L, P, K) float64
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, condition: str, grads: torch.Tensor) -> None:
        g = -grads.double()
        gn = g / g.norm(dim=-1, keepdim=True)
        if not torch.isfinite(gn).all():
            raise FloatingPointError(f"zero or non-finite gradient in the random-direction null ({condition})")
        c = torch.einsum("blpd,lkd->lpk", gn, self.dirs.double())
        if condition in self.sums:
            self.sums[condition] += c
            self.counts[condition] += grads.shape[0]
        else:
            self.sums[condition] = c
            self.counts[condition] = grads.shape[0]

    def mean(self, condition: str) -> np.ndarray:
        return (self.sums[condition] / self.counts[condition]).numpy()


def make_random_dirs(n_layers: int, k: int, d: int, seed: int) -> torch.Tensor:
    """(L, K, d) isotropic unit directions, an independent set per layer, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([random_unit_directions(d, k, rng) for _ in range(n_layers)]))


def null_p_values(delta_v: np.ndarray, delta_r: np.ndarray) -> np.ndarray:
    """Two-sided permutation-style p per layer/position: (1 + #|null| >= |obs|) / (1 + K).

    ``delta_v`` (L, P); ``delta_r`` (L, P, K).
    """
    exceed = (np.abs(delta_r) >= np.abs(delta_v)[..., None]).sum(-1)
    return (1 + exceed) / (1 + delta_r.shape[-1])
