"""Preventative steering as a training condition: which runs exist and what vector each adds.

Preventative steering (persona-vector work) trains under the neutral prompt while adding
a multiple of the trait direction to the residual stream, so the optimizer no longer has
to move the activations toward the trait to fit trait data; the vector is removed at
test. It competes with inoculation prompting, which gets the same effect from a prompt.

This module only decides names and vectors; the residual scale is read by
:func:`nnsight_inoc.probes.residuals.residual_scale`, and the addition itself happens inside
the nnsight trace in :mod:`nnsight_inoc.trace.tracing` (``steered_loss`` and
``capture_gradients(steer=...)``).

Alpha units (``[steering].units``):

* ``resid_norm`` (default): the vector added at layer l is ``alpha * s(l) * v(l)`` with
  ``s(l)`` the median per-token norm of the base model's residual stream after layer l,
  over the probe examples under the neutral prompt (real tokens only). v is unit-norm,
  so a raw alpha means nothing across layers or models: residual norms grow with depth
  (O(10-100) in the 1.5B study model) and one attention-sink token can be 10-100x the
  others, hence the median rather than the mean. alpha = 0.1 adds a vector a tenth as
  long as a typical residual.
* ``absolute``: the vector is ``alpha * v(l)``, length alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from nnsight_inoc.core.config import SteeringConfig

PREFIX = "steer_"


@dataclass(frozen=True)
class SteerSpec:
    """One steering condition: coefficient, layers, and the unit the coefficient is in."""

    alpha: float
    layers: tuple[int, ...]
    units: Literal["resid_norm", "absolute"]

    @property
    def name(self) -> str:
        """Condition (and run folder) name, e.g. ``steer_a0.1_l14`` or ``steer_a4_l10-14-18``."""
        return f"{PREFIX}a{self.alpha:g}_l{'-'.join(str(l) for l in self.layers)}"

    def as_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "layers": list(self.layers), "units": self.units}


def is_steering(condition: str) -> bool:
    return condition.startswith(PREFIX)


def default_layer_sets(n_layers: int) -> list[list[int]]:
    """One middle layer, and the middle with one layer a seventh of the depth either side.

    For the 28-layer study model: [[14], [10, 14, 18]]. Tiny models (under 7 layers)
    get only the single middle layer, since the spread would collapse onto it.
    """
    mid, off = n_layers // 2, n_layers // 7
    return [[mid]] if off == 0 else [[mid], [mid - off, mid, mid + off]]


def steer_specs(cfg: SteeringConfig, n_layers: int) -> dict[str, SteerSpec]:
    """Every (alpha, layer set) condition by name; layers checked against the model."""
    sets = cfg.layer_sets or default_layer_sets(n_layers)
    bad = sorted({l for ls in sets for l in ls if l >= n_layers})
    if bad:
        raise ValueError(f"steering.layer_sets name layers {bad}, but the model has {n_layers} layers (0..{n_layers - 1})")
    out: dict[str, SteerSpec] = {}
    for ls in sets:
        for a in cfg.alphas:
            spec = SteerSpec(alpha=float(a), layers=tuple(ls), units=cfg.units)
            if spec.name in out:
                raise ValueError(f"two steering conditions share the name {spec.name} (alphas equal to 6 significant digits)")
            out[spec.name] = spec
    return out


def steering_vectors(spec: SteerSpec, v: torch.Tensor, scale: dict[int, float] | None) -> dict[int, torch.Tensor]:
    """{layer: alpha * s(l) * v(l)} (float32 CPU); ``scale`` is required for resid_norm units only."""
    if spec.units == "resid_norm":
        if scale is None or set(scale) != set(spec.layers):
            raise ValueError(f"resid_norm steering needs the residual scale of layers {list(spec.layers)}")
        return {l: (spec.alpha * scale[l]) * v[l].float() for l in spec.layers}
    if scale is not None:
        raise ValueError("absolute steering takes no residual scale")
    return {l: spec.alpha * v[l].float() for l in spec.layers}


def same_steering(recorded: dict[str, Any] | None, spec: SteerSpec | None) -> bool:
    """Whether a finished run's recorded steering (train.json) is the one now configured."""
    if recorded is None or spec is None:
        return recorded is None and spec is None
    return {k: recorded.get(k) for k in ("alpha", "layers", "units")} == spec.as_dict()
