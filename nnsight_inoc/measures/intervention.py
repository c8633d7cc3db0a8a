"""Gradient interventions as training conditions: which arms exist, their directions, and the edit itself.

The study's question is causal: does inoculation prevent drift *by* turning the training gradient
away from the trait direction v? Instead of comparing training prompts (which change the loss and
the gradient at once), these arms change the gradient itself during LoRA training and leave the
forward pass and the loss unchanged. At the output of each chosen decoder layer l and every token
position, the gradient of the loss with respect to the residual stream, g, is replaced by

    g' = g + (s - 1) (g . u) u        (u unit-norm: the component of g along u is multiplied by s)

before it flows on backward to earlier layers and the LoRA weights. The arms (issue 22; the design
follows the intervention test of Grant, Gillioz, Ward and McGrath 2026, "Shifting the Gradient",
which forces the trait-direction component of the training gradient to zero or flips it):

* ``zero_v``: u = v(l), s = 0, under the neutral prompt (sufficiency: does removing v's share of the
  gradient prevent drift?);
* ``zero_rand``: u = a fixed random unit direction per layer (seeded, recorded), s = 0, under the
  neutral prompt: the control for removing any one direction;
* ``flip_v``: u = v(l), s = -1, under the neutral prompt (forced attenuation);
* ``restore_v``: u = v(l), s = s(l) > 0, under the inoculation prompt, with s(l) chosen per layer at
  step 0 so that the probe's mean cos(-g, v) at ``a_sum`` equals the neutral prompt's (necessity:
  does inoculation still protect when its rotation is undone?). :func:`restore_factor` solves for it; at a
  layer where no scale reaches neutral's alignment the nearest scale is used and the layer is recorded, and
  the arm is refused when that layer is the verdicts' reporting layer (pre-registered before any restore_v
  run trained: the first GPU attempt found such a layer, layer 3, and stopped).

This module is plain math (no trace): the edit is applied inside the nnsight trace of each training
step and probe (:mod:`nnsight_inoc.trace.intervened`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

ARMS: dict[str, dict[str, Any]] = {
    # arm -> (direction, component scale, training-prompt condition)
    "zero_v": {"direction": "v", "scale": 0.0, "base": "neutral"},
    "zero_rand": {"direction": "random", "scale": 0.0, "base": "neutral"},
    "flip_v": {"direction": "v", "scale": -1.0, "base": "neutral"},
    "restore_v": {"direction": "v", "scale": None, "base": "inoc"},  # None: measured at step 0 (restore_factor)
}
RESTORE_POSITION = "a_sum"  # the position whose mean cosine restore_v matches to neutral's (the verdicts' position)
RESTORE_TOL = 1e-6  # |mean cos after - target| the factor search stops at (cosine units)
MAX_FACTOR = 1e4  # the largest s the restore search tries before it says the target cannot be reached


def is_arm(condition: str) -> bool:
    """Whether a condition name is a gradient-intervention arm."""
    return condition in ARMS


@dataclass(frozen=True)
class InterveneSpec:
    """One intervention arm of a run: its name, the decoder layers edited and the random direction's seed.

    ``factors`` is filled for ``restore_v`` once measured (layer -> s); the fixed arms carry their scale in
    :data:`ARMS`.
    """

    arm: str
    layers: tuple[int, ...]
    rand_seed: int

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"unknown intervention arm {self.arm!r}; choose from {', '.join(ARMS)}")
        if not self.layers or list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"intervention layers must be non-empty and strictly increasing, got {self.layers}")

    @property
    def direction(self) -> str:
        return str(ARMS[self.arm]["direction"])

    @property
    def base_condition(self) -> str:
        """The condition whose training prompt this arm trains under (neutral, or inoc for restore_v)."""
        return str(ARMS[self.arm]["base"])

    def as_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "layers": list(self.layers), "rand_seed": self.rand_seed}


def random_directions(n_layers: int, d: int, seed: int) -> torch.Tensor:
    """A fixed random unit direction per layer, (n_layers, d) float32, from ``torch.Generator(seed)``.

    Drawn from a standard normal and normalised, so each is uniform on the sphere; the same seed gives
    the same directions on every machine (CPU generator).
    """
    g = torch.Generator().manual_seed(int(seed))
    return torch.nn.functional.normalize(torch.randn(n_layers, d, generator=g, dtype=torch.float64), dim=-1).float()


def unit(v: torch.Tensor) -> torch.Tensor:
    """Each row of ``v`` (L, d) scaled to unit norm; ValueError for a zero or non-finite row."""
    n = v.double().norm(dim=-1, keepdim=True)
    if not torch.isfinite(n).all() or (n == 0).any():
        raise ValueError("a direction is zero or non-finite; it has no unit vector")
    return (v.double() / n).float()


def directions_for(spec: InterveneSpec, v: torch.Tensor) -> torch.Tensor:
    """The unit direction u(l) the arm edits along, for every layer of the model: (L, d) float32."""
    if spec.direction == "v":
        return unit(v)
    return random_directions(v.shape[0], v.shape[1], spec.rand_seed)


def fixed_scale(spec: InterveneSpec) -> float | None:
    """The arm's fixed component scale s (0 removes, -1 reverses); None for restore_v (measured)."""
    s = ARMS[spec.arm]["scale"]
    return None if s is None else float(s)


def edit_gradient(g: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """g' = g + (s - 1) (g . u) u, per row: the component of g along u multiplied by s.

    ``g`` (R, T, d) gradients at one layer's output; ``u`` (R, d) unit directions per row (a zero row
    leaves that row unchanged); ``s`` (R,) scales (1 leaves the row unchanged). Computed in float32 at
    least (elementwise products and sums, which autocast leaves alone), returned in ``g``'s dtype.
    """
    if g.dim() != 3 or u.shape != (g.shape[0], g.shape[2]) or s.shape != (g.shape[0],):
        raise ValueError(f"edit shapes: g (R, T, d), u (R, d), s (R,); got {tuple(g.shape)}, {tuple(u.shape)}, "
                         f"{tuple(s.shape)}")
    work = torch.promote_types(g.dtype, torch.float32)
    gw, uw = g.to(work), u.to(g.device, work)
    dot = (gw * uw[:, None, :]).sum(-1, keepdim=True)  # (R, T, 1)
    out = gw + (s.to(g.device, work) - 1)[:, None, None] * dot * uw[:, None, :]
    return out.to(g.dtype)


def cos_after(proj: np.ndarray, norm: np.ndarray, s: float) -> np.ndarray:
    """cos(-g', v) per example after multiplying g's component along v by ``s``.

    ``proj`` = <-g, v> and ``norm`` = |g| per example (v unit); |g'|^2 = |g|^2 + (s^2 - 1) <g, v>^2.
    """
    p, n = np.asarray(proj, dtype=np.float64), np.asarray(norm, dtype=np.float64)
    rest = np.maximum(n**2 - p**2, 0.0)  # the part of |g|^2 off v; clipped at round-off
    return s * p / np.sqrt(rest + (s * p) ** 2)


def restore_factor(proj: np.ndarray, norm: np.ndarray, target: float) -> tuple[float, bool]:
    """The scale s >= 0 of the v-component whose mean cos(-g', v) over the examples equals ``target``.

    Returns (s, reached). The root nearest to s = 1 (the smallest change that reaches the target): a
    geometric scan from 1 outward (up to :data:`MAX_FACTOR` and down to 0) brackets a sign change of
    ``mean cos_after(s) - target``, then scipy's Brent root finder narrows it.

    When no s in [0, MAX_FACTOR] reaches the target, ``reached`` is False and s is the scale whose mean
    comes nearest to it (on the same scan, refined by a bounded search around the best point). This
    happens where the examples' v-components at a layer are so balanced in sign that scaling them all
    moves their mean toward the mean of their signs, not toward the target (seen on the GPU at layer 3
    of the 1.5B study model: neutral -0.0039, inoculation -0.00004; issue 22, before any restore_v run).
    The caller records such layers; :func:`nnsight_inoc.probes.restore.restore_factors` refuses the arm
    when the verdicts' reporting layer is one of them. ValueError for a non-finite target.
    """
    if not math.isfinite(target):
        raise ValueError(f"restore target must be finite, got {target}")

    def f(s: float) -> float:
        return float(cos_after(proj, norm, s).mean()) - target

    f1 = f(1.0)
    if abs(f1) <= RESTORE_TOL:
        return 1.0, True
    up = [1.0 * 1.25**k for k in range(1, 200) if 1.25**k <= MAX_FACTOR] + [MAX_FACTOR]
    down = [0.8**k for k in range(1, 80)] + [0.0]
    seen: list[tuple[float, float]] = [(1.0, f1)]
    for grid in (up, down) if f1 < 0 else (down, up):
        prev, fprev = 1.0, f1
        for s in grid:
            fs = f(s)
            seen.append((s, fs))
            if abs(fs) <= RESTORE_TOL:
                return s, True
            if (fs > 0) != (fprev > 0):
                return float(brentq(f, prev, s, xtol=1e-12)), True
            prev, fprev = s, fs
    best, _ = min(seen, key=lambda t: abs(t[1]))
    grid = sorted(x for x, _ in seen)
    i = grid.index(best)
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(lambda x: abs(f(x)), bounds=(lo, hi), method="bounded") if hi > lo else None
    if res is not None and abs(f(float(res.x))) < abs(f(best)):
        best = float(res.x)
    return best, False


def direction_record(spec: InterveneSpec, u: torch.Tensor, v: torch.Tensor) -> dict[str, Any]:
    """What train.json records about the edited directions: their sha256 and cosine with v per edited layer."""
    vu = unit(v)
    cos = (u.double() * vu.double()).sum(-1)
    return {"direction": spec.direction,
            "directions_sha256": hashlib.sha256(u.float().contiguous().numpy().tobytes()).hexdigest(),
            "cos_with_v": {str(l): float(cos[l]) for l in spec.layers}}
