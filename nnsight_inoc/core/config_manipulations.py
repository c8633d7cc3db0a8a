"""Config sections of the training-time manipulations: preventative steering and gradient interventions.

One family: each declares extra training conditions that train under an existing prompt while
changing something inside the training step's nnsight trace (the forward pass for steering, the
backward pass for an intervention). Both are top-level sections, not inside [finetune], so editing
them does not invalidate the already-trained prompt conditions, whose train.json records the
finetune section. Both are off by default (every published config.toml predates the interventions).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from nnsight_inoc.core.section import _Section


class SteeringConfig(_Section):
    """Preventative steering: LoRA training under the neutral prompt with alpha * scale(l) * v(l)
    added to decoder layer l's output on every token; removed at test. One condition per
    (alpha, layer set). A top-level section (not inside [finetune]) so that editing the sweep
    does not invalidate the already-trained prompt conditions, whose train.json records
    the finetune section."""

    alphas: list[float] = Field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.4],
        min_length=1,
        description="Steering coefficients. With units='resid_norm' each is a fraction of the median per-token "
        "residual-stream norm at the layer (base model, neutral prompt, probe examples): 0.1 adds a vector a tenth "
        "as long as a typical residual. With units='absolute' the vector added is alpha * v(l), v unit-norm.",
    )
    layer_sets: list[list[int]] = Field(
        default_factory=list,
        description="Layer sets to steer, each trained with every alpha. Empty = [[L//2], [L//2 - L//7, L//2, "
        "L//2 + L//7]] for an L-layer model ([[14], [10, 14, 18]] for the 28-layer study model). Checked against "
        "the model when used.",
    )
    units: Literal["resid_norm", "absolute"] = Field(
        "resid_norm",
        description="How alpha is scaled: relative to the layer's median residual norm (comparable across layers "
        "and models) or absolute (v is unit-norm, so alpha is the added vector's length).",
    )

    @field_validator("alphas")
    @classmethod
    def _finite_nonzero(cls, v: list[float]) -> list[float]:
        bad = [a for a in v if a == 0 or a != a or abs(a) == float("inf")]
        if bad:
            raise ValueError(f"alphas must be finite and non-zero (alpha 0 is the neutral condition), got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"alphas repeat: {v}")
        return v

    @field_validator("layer_sets")
    @classmethod
    def _layer_sets(cls, v: list[list[int]]) -> list[list[int]]:
        for ls in v:
            if not ls:
                raise ValueError("a layer set is empty")
            if any(l < 0 for l in ls):
                raise ValueError(f"layer indices must be >= 0, got {ls}")
            if sorted(set(ls)) != ls:
                raise ValueError(f"each layer set must be strictly increasing, got {ls}")
        if len({tuple(ls) for ls in v}) != len(v):
            raise ValueError(f"layer sets repeat: {v}")
        return v


class InterveneConfig(_Section):
    """Gradient interventions (issue 22): during LoRA training, at the output of each chosen decoder layer and
    every token, the gradient of the loss w.r.t. the residual stream has its component along a direction
    removed, reversed or rescaled before it flows on backward; the forward pass and the loss are unchanged.
    One training condition per arm, named after it (nnsight_inoc/measures/intervention.py)."""

    arms: list[Literal["zero_v", "zero_rand", "flip_v", "restore_v"]] = Field(
        default_factory=list,
        description="Arms to train, each a condition of the main sweep: 'zero_v' removes the component along v(l) "
        "(neutral prompt); 'zero_rand' removes it along a fixed random unit direction per layer (neutral prompt; the "
        "control for removing any one direction); 'flip_v' reverses it (neutral prompt); 'restore_v' (inoculation "
        "prompt) scales it per layer so that the step-0 probe's mean cos(-g, v) at a_sum equals the neutral "
        "prompt's (factors measured at step 0 and recorded). Empty (the default) = none.",
    )
    layers: list[int] = Field(
        default_factory=list,
        description="Decoder layers whose output gradient is edited; empty = every layer. Checked against the model "
        "when used.",
    )
    rand_seed: int = Field(0, description="Seed of zero_rand's random directions (torch.Generator on the CPU; the "
                           "directions' sha256 and cosine with v are recorded in train.json).")

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"arms repeat: {v}")
        return v

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int]) -> list[int]:
        if any(l < 0 for l in v) or sorted(set(v)) != v:
            raise ValueError(f"layers must be >= 0 and strictly increasing, got {v}")
        return v
