"""restore_v's factors: per layer, the scale of the gradient's v-component that gives inoculation neutral's alignment.

The necessity test of issue 22: train under the inoculation prompt, but undo its rotation. For each
edited layer l, the component of the residual-stream gradient along v(l) is multiplied by s(l),
chosen at step 0 so that the probe's mean cos(-g, v) at ``a_sum`` under the inoculation prompt equals
the neutral prompt's on the same probe examples. Layers are calibrated from the top down: an edit at
layer l changes every gradient below it, so s(l) is solved with the factors of the layers above
already applied, and the final edited probe matches neutral at every edited layer at once (checked
and recorded). At step 0 the LoRA update is zero (B = 0), so the factors are measured on the base
model and do not depend on the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from nnsight_inoc.core.progress import log
from nnsight_inoc.measures.alignment import position_names
from nnsight_inoc.measures.intervention import RESTORE_POSITION, restore_factor, unit
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.trace.chat import Systems
from nnsight_inoc.trace.edit import GradEdit
from nnsight_inoc.trace.tracing import TracedLM

MAX_ACHIEVED_GAP = 1e-3  # |achieved - neutral| mean cosine at a reached layer; above it the calibration failed


def restore_edit(u: torch.Tensor, factors: dict[int, float]) -> GradEdit | None:
    """One run's edit scaling the component along ``u`` (L, d unit) by ``factors[l]`` at each layer; None if empty."""
    layers = tuple(sorted(factors))
    if not layers:
        return None
    return GradEdit(layers, u[list(layers)].unsqueeze(0).float(),
                    torch.tensor([[factors[l] for l in layers]], dtype=torch.float32))


def restore_factors(
    tlm: TracedLM, tok: PreTrainedTokenizerBase, inoc_system: Systems, neutral_system: Systems,
    prompts: Sequence[str], completions: Sequence[str], v: torch.Tensor, layers: Sequence[int], *,
    n_assistant: int, batch_size: int, required_layer: int,
) -> dict[str, Any]:
    """Measure restore_v's factor s(l) for every layer of ``layers`` on the probe examples; the record train.json keeps.

    ``v`` (L, d) the study's direction (made unit here); ``layers`` the edited decoder layers;
    ``required_layer`` the verdicts' reporting layer, where neutral's alignment must be reached. Returns
    ``{"position", "factors": {l: s}, "target_neutral_cos": {l}, "inoc_cos_unedited": {l},
    "achieved_cos": {l}, "unreached": {l: gap}, "max_abs_gap" (over the reached layers),
    "required_layer", "n_examples"}`` (layer keys as strings, cosine at ``a_sum``). At a layer no scale
    reaches, the nearest one is used and the layer is listed in ``unreached`` with its remaining gap
    (:func:`~nnsight_inoc.measures.intervention.restore_factor`). ValueError when the required layer is
    unreached, or when the final edited probe misses neutral's alignment by more than
    :data:`MAX_ACHIEVED_GAP` at a reached layer.
    """
    vu = unit(v)
    pos = position_names(n_assistant).index(RESTORE_POSITION)

    def probe(system: Systems, edit: GradEdit | None, label: str) -> Any:
        return gradient_metrics(tlm, tok, system, prompts, completions, vu, n_assistant=n_assistant,
                                batch_size=batch_size, edit=edit, label=label)

    target = probe(neutral_system, None, "restore_v calibration (neutral)").cos[:, :, pos].double().mean(0)
    unedited = probe(inoc_system, None, "restore_v calibration (inoculation)")
    factors: dict[int, float] = {}
    unreached: list[int] = []
    for l in sorted(layers, reverse=True):
        m = unedited if not factors else probe(inoc_system, restore_edit(vu, factors),
                                               f"restore_v calibration at layer {l}")
        factors[l], reached = restore_factor(m.proj[:, l, pos].numpy(), m.norm[:, l, pos].numpy(), float(target[l]))
        if not reached:
            unreached.append(l)
            log(f"restore_v: no scale reaches neutral's alignment at layer {l} (neutral {float(target[l]):+.5f}); "
                "the nearest scale is used and the layer recorded with its gap (`unreached`)")
            if l == required_layer:
                raise ValueError(f"restore_v cannot give the inoculation prompt neutral's alignment at the reporting "
                                 f"layer {l} (neutral {float(target[l]):+.5f}); the necessity arm is undefined here")
    achieved = probe(inoc_system, restore_edit(vu, factors), "restore_v check").cos[:, :, pos].double().mean(0)
    gaps = {l: abs(float(achieved[l] - target[l])) for l in layers}
    reached_gaps = {l: g for l, g in gaps.items() if l not in unreached}
    worst = max(reached_gaps, key=reached_gaps.__getitem__)
    if reached_gaps[worst] > MAX_ACHIEVED_GAP:
        raise ValueError(f"restore_v calibration missed neutral's alignment at layer {worst} by "
                         f"{reached_gaps[worst]:.2e} (limit {MAX_ACHIEVED_GAP:g})")
    inoc = unedited.cos[:, :, pos].double().mean(0)
    return {"position": RESTORE_POSITION, "factors": {str(l): factors[l] for l in sorted(factors)},
            "target_neutral_cos": {str(l): float(target[l]) for l in sorted(factors)},
            "inoc_cos_unedited": {str(l): float(inoc[l]) for l in sorted(factors)},
            "achieved_cos": {str(l): float(achieved[l]) for l in sorted(factors)},
            "unreached": {str(l): gaps[l] for l in sorted(unreached)},
            "max_abs_gap": reached_gaps[worst], "required_layer": required_layer, "n_examples": len(prompts)}
