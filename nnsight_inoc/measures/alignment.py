"""Gradient-vs-direction metrics: projection, norm and cosine of -g with v, and the unit-gradient sums.

Sign convention, used in every table and plot: we report quantities of ``-g``,
the direction a gradient-descent step moves the activation. ``cos(-g, v) > 0``
means training pushes the residual stream toward the trait; the hypothesis is
that an inoculation prompt lowers this cosine relative to a neutral prompt.
The cosine, not the projection or the norm, is the test: the projection scales
with the loss (a prompt that explains the data away shrinks every gradient), so
only the angle separates "rotated away from the trait" from "smaller overall".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SIGN_NOTE = "cos(-g, v): -g is the direction a gradient step moves the activation; > 0 = toward the trait"


def position_names(n_assistant: int) -> list[str]:
    """Gradient positions: final prompt token, each assistant token, and their sum."""
    return ["final_prompt"] + [f"a{i + 1}" for i in range(n_assistant)] + ["a_sum"]


def beyond_position_names(n: int) -> list[str]:
    """Issue 22's positions beyond the longest quoted leak: b1..bn (completion tokens after the quoted words)
    and their sum b_sum."""
    return [f"b{i + 1}" for i in range(n)] + ["b_sum"]


def with_total(grads: torch.Tensor) -> torch.Tensor:
    """Append the sum over all positions: (B, L, k, d) -> (B, L, k + 1, d) (the b positions and b_sum)."""
    return torch.cat([grads, grads.sum(2, keepdim=True)], dim=2)


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


def unit_neg_grad_sum(grads: torch.Tensor) -> torch.Tensor:
    """Sum over examples of -g/|g|, (L, P, d) float64.

    The random-direction null needs nothing more: for any direction r, the condition
    difference in mean cosine is linear in r, ``<mu_a - mu_b, r>`` with ``mu`` the mean
    unit -gradient, so its distribution over random r follows from ``mu`` alone (exactly,
    see :func:`sphere_null_p`), and Monte-Carlo directions can be drawn after the run.
    """
    g = -grads.double()
    n = g.norm(dim=-1, keepdim=True)
    if (n == 0).any() or not torch.isfinite(n).all():
        raise FloatingPointError("zero or non-finite gradient: the direction of -g is undefined")
    return (g / n).sum(0)
