"""The gradient-intervention arms of a finetune plan: their specs, and the edit and record of each run.

Shared by every executor (sequential, claim workers, grouped, Ray), so a run's intervention depends
on the plan alone. The arms and the edit are defined in :mod:`nnsight_inoc.measures.intervention`;
the edit runs inside the training step's nnsight trace (:mod:`nnsight_inoc.trace.intervened`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import NEUTRAL_CONDITION
from nnsight_inoc.measures.intervention import (
    ARMS,
    InterveneSpec,
    direction_record,
    directions_for,
    fixed_scale,
)
from nnsight_inoc.probes.restore import restore_factors
from nnsight_inoc.study import SFTSet, Study
from nnsight_inoc.trace.chat import Systems
from nnsight_inoc.trace.edit import GradEdit

WHERE = ("the gradient of the loss w.r.t. each edited decoder layer's output (residual stream), every token, in the "
         "backward pass of every training step and probe; forward pass and loss unchanged; not at test")


def intervene_specs(study: Study) -> dict[str, InterveneSpec]:
    """The configured arms by condition name (the arm's name), layers checked against the model.

    ValueError (before any training) for a layer the model lacks, or for an arm whose training prompt's
    condition (neutral, or inoc for restore_v) is not in ``align.conditions``.
    """
    cfg, n_layers = study.cfg.intervene, study.tlm.n_layers
    if not cfg.arms:
        return {}
    bad = [l for l in cfg.layers if l >= n_layers]
    if bad:
        raise ValueError(f"intervene.layers name layers {bad}, but the model has {n_layers} layers (0..{n_layers - 1})")
    layers = tuple(cfg.layers) or tuple(range(n_layers))
    out = {}
    for arm in cfg.arms:
        spec = InterveneSpec(arm, layers, cfg.rand_seed)
        if spec.base_condition not in study.cfg.align.conditions:
            raise ValueError(f"intervention arm {arm} trains under the {spec.base_condition!r} prompt, which "
                             f"align.conditions lacks")
        out[arm] = spec
    return out


def arm_prompts(study: Study) -> dict[str, str]:
    """Each configured arm's training system prompt (its base condition's)."""
    return {arm: study.cfg.align.conditions[str(ARMS[arm]["base"])] for arm in study.cfg.intervene.arms}


def intervention_setup(study: Study, spec: InterveneSpec | None, sft: SFTSet, v: torch.Tensor,
                       systems: Systems, layer: int) -> tuple[GradEdit | None, dict[str, Any] | None]:
    """The one-run edit a run trains and probes under, and what its train.json records; (None, None) for none.

    ``systems`` is the run's own training system prompt(s) (the inoculation prompt for restore_v), whose
    step-0 probe restore_v calibrates on the first ``finetune.n_probe`` SFT examples
    (:func:`restore_record`); ``layer`` is the verdicts' reporting layer, where restore_v must reach
    neutral's alignment.
    """
    if spec is None:
        return None, None
    u = directions_for(spec, v)
    record: dict[str, Any] = {**spec.as_dict(), **direction_record(spec, u, v), "where": WHERE,
                              "scale": fixed_scale(spec)}
    if spec.arm == "restore_v":
        rec = restore_record(study, spec, sft, v, systems, layer)
        record["restore"] = rec
        scales = [rec["factors"][str(l)] for l in spec.layers]
    else:
        scales = [float(fixed_scale(spec) or 0.0)] * len(spec.layers)
    edit = GradEdit(spec.layers, u[list(spec.layers)].unsqueeze(0).float(), torch.tensor([scales], dtype=torch.float32))
    return edit, record


def restore_record(study: Study, spec: InterveneSpec, sft: SFTSet, v: torch.Tensor, systems: Systems,
                   layer: int) -> dict[str, Any]:
    """restore_v's factors (:func:`~nnsight_inoc.probes.restore.restore_factors`), measured once per run folder.

    At step 0 the adapters are zero, so every seed's run calibrates the same base model on the same probe
    examples: the record is written to ``finetune/restore_v.json`` with everything it depends on (prompts,
    layers, probe ids, the direction's and model's sha256, capture precision) and reused while all of that
    is unchanged, so a sweep measures it once and no seed's run can use factors of other inputs.
    """
    n = study.cfg.finetune.n_probe
    rows = systems if isinstance(systems, str) or systems is None else list(systems[:n])
    neutral = study.cfg.align.conditions[NEUTRAL_CONDITION]
    key = {"inoc_systems": rows, "neutral": neutral, "layers": list(spec.layers), "probe_ids": sft.ids[:n],
           "v_sha256": hashlib.sha256(v.float().contiguous().numpy().tobytes()).hexdigest(),
           "model_sha256": study.loaded.sha256, "capture_precision": study.cfg.align.capture_precision,
           "n_assistant": study.cfg.align.n_assistant_tokens, "batch_size": study.cfg.align.batch_size,
           "required_layer": layer}
    path = study.layout.restore_record
    if path.is_file():
        saved = A.read_json(path)
        if saved.get("key") == key:
            return saved["record"]
    rec = restore_factors(study.tlm, study.loaded.tokenizer, rows, neutral, sft.prompts[:n], sft.completions[:n], v,
                          spec.layers, n_assistant=study.cfg.align.n_assistant_tokens,
                          batch_size=study.cfg.align.batch_size, required_layer=layer)
    A.write_json(path, {"key": key, "record": rec})
    return rec


def same_intervention(recorded: dict[str, Any] | None, spec: InterveneSpec | None) -> bool:
    """Whether a finished run's recorded intervention (train.json) is the one now configured."""
    if recorded is None or spec is None:
        return recorded is None and spec is None
    keys = ("arm", "layers", "rand_seed") if spec.direction == "random" else ("arm", "layers")  # the seed moves zero_rand only
    return all(recorded.get(k) == spec.as_dict()[k] for k in keys)
