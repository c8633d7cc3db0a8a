"""Training one run of the finetune plan: LoRA steps with the gradient-alignment probe tracked during training.

The probe (mean cos(-g, v) on a fixed set of SFT examples under the training prompt) is
:func:`~nnsight_inoc.probes.gradients.gradient_metrics`, the loop that measures alignment
before training, so the step-0 probe is the pre-training alignment of that subset.

A run is resumable: ``train.json`` is written last and marks a trained run
(:func:`needs_training`); a finished run trained with another config, prompt or steering is
refused (:func:`check_trained`) rather than mixed in.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import NEUTRAL_CONDITION
from nnsight_inoc.core.layout import RunFiles, RunLayout
from nnsight_inoc.core.progress import task
from nnsight_inoc.measures.alignment import position_names
from nnsight_inoc.measures.intervention import InterveneSpec
from nnsight_inoc.measures.steering import SteerSpec, same_steering, steering_vectors
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.probes.losses import example_losses
from nnsight_inoc.probes.residuals import residual_scale
from nnsight_inoc.stages.intervene import intervention_setup, same_intervention
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec
from nnsight_inoc.study import SFTSet, Study
from nnsight_inoc.trace.chat import Systems, encode_chats
from nnsight_inoc.trace.edit import GradEdit
from nnsight_inoc.trace.tracing import TracedLM, wrap
from nnsight_inoc.train.lora import (
    Precision,
    lora_parameters,
    make_lora_model,
    save_adapter,
    seeded,
    train_step,
)
from nnsight_inoc.train.order import probe_steps, step_order

SIGN_NOTE_TRAIN = "cos(-g, v) > 0: a gradient step moves the activation toward the trait"


def free_memory() -> None:
    """Return a finished run's memory: cycles collected, the CUDA cache emptied."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def precision(study: Study) -> Precision:
    """The training steps' precision policy for this study (``finetune.train_autocast``)."""
    return Precision(study.cfg.finetune.train_autocast, study.loaded.dtype, study.tlm.autocast)


def check_trained(study: Study, train_json: Path, system: str, steer: SteerSpec | None = None,
                  leak: dict[str, Any] | None = None, intervene: InterveneSpec | None = None) -> dict[str, Any]:
    """A finished run's record, refusing one trained with another config, prompt, content leak, steering or
    gradient intervention."""
    rec = A.read_json(train_json)
    if (rec["finetune_config"] != study.cfg.finetune.model_dump() or rec["system_prompt"] != system
            or rec.get("leak") != leak):
        raise ValueError(f"{train_json} was trained with another config or prompt; use a new --run-dir")
    if not same_steering(rec.get("steering"), steer):
        raise ValueError(f"{train_json} was trained with other steering; use a new --run-dir")
    if not same_intervention(rec.get("intervention"), intervene):
        was = {k: v for k, v in (rec.get("intervention") or {}).items() if k in ("arm", "layers", "rand_seed")} or None
        raise ValueError(f"{train_json} was trained with another gradient intervention ({was}; now "
                         f"{intervene.as_dict() if intervene else None}): set [intervene] as it was, or use a new --run-dir")
    return rec


def check_run(study: Study, files: RunFiles, run: RunSpec) -> dict[str, Any]:
    """:func:`check_trained` with everything ``run`` was planned with (prompt, steering, leak, intervention)."""
    return check_trained(study, files.train_json, run.system_prompt, run.steer, run.prompting.record(), run.intervene)


def needs_training(files: RunFiles) -> bool:
    """A run must be trained unless it has train.json and, for its drift still to come, its adapter.

    Why the second part: published run folders keep train.json and drift.json but no adapter (37 MB
    each). A run published between training and drift (a GPU session that ran out of time) has only
    train.json, and its drift can never be measured from it, so it is trained again.
    """
    if not files.train_json.is_file():
        return True
    return not files.drift_json.is_file() and not files.adapter.is_dir()


def rows_of(systems: Systems, idx: Sequence[int]) -> Systems:
    """The system prompts of the examples ``idx``: the shared one, or each example's own."""
    return systems if systems is None or isinstance(systems, str) else [systems[i] for i in idx]


def content_loss_pre(study: Study, plan: FinetunePlan, run: RunSpec) -> float | None:
    """Mean loss of the probe examples' UNTRAITED answers under the run's prompt, before training (the content
    part of the step-0 probe loss, issue 16); None without untraited answers or for a steering run."""
    sft = plan.sft
    if sft is None or sft.untraited is None or run.steer is not None:
        return None
    n = study.cfg.finetune.n_probe
    systems = rows_of(plan.sft_systems(run), range(n))
    return float(example_losses(study.tlm, study.loaded.tokenizer, systems, sft.prompts[:n], sft.untraited[:n],
                                study.cfg.align.batch_size).astype("float64").mean())


def probe(
    study: Study, tlm: TracedLM, system_prompt: Systems, sft: SFTSet, v: torch.Tensor, step: int,
    steer: dict[int, torch.Tensor] | None = None, edit: GradEdit | None = None,
) -> dict[str, Any]:
    """Mean cos(-g, v) per layer and position ((L, P) float32), and mean loss, on the first n_probe SFT examples.

    With ``steer`` the probe's forward pass is steered like training, so g is the gradient a
    steered training step actually sees. Runs in eval mode (no dropout, so probes of different
    steps are comparable) and clears the parameter gradients its backward accumulates, leaving
    the model in train mode. With ``edit`` (a gradient-intervention arm) the probe reads the edited
    gradient, so it shows the alignment the intervention leaves (0 at every edited layer for zero_v).
    """
    n = study.cfg.finetune.n_probe
    bs = study.cfg.align.batch_size
    tlm.hf_model.eval()
    try:
        m = gradient_metrics(tlm, study.loaded.tokenizer, rows_of(system_prompt, range(n)), sft.prompts[:n],
                             sft.completions[:n], v,
                             n_assistant=study.cfg.align.n_assistant_tokens, batch_size=bs, ids=sft.ids[:n],
                             steer=steer, edit=edit, label=f"probe at step {step}")
    finally:
        for p in tlm.hf_model.parameters():
            p.grad = None
        tlm.hf_model.train()
    # Summed batch by batch in float64, as the probe always has, so published probe values reproduce.
    cos_sum = sum(m.cos[s : s + bs].double().sum(0) for s in range(0, n, bs))
    loss_sum = sum(float(m.loss[s : s + bs].double().sum()) for s in range(0, n, bs))
    return {"step": step, "cos": (cos_sum / n).float(), "loss": loss_sum / n}


def check_inputs(study: Study, sft: SFTSet, v: torch.Tensor) -> None:
    """Refuse a plan this study cannot train (probe set larger than the SFT set, wrong or non-finite v)."""
    cfg = study.cfg.finetune
    if cfg.n_probe > len(sft.prompts):
        raise ValueError(f"finetune.n_probe={cfg.n_probe} exceeds the {len(sft.prompts)} SFT examples")
    want = (study.tlm.n_layers, study.tlm.d_model)
    if tuple(v.shape) != want:
        raise ValueError(f"v must be (n_layers, d_model) = {want}, got {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError("v contains NaN/inf")


def steering_setup(
    study: Study, steer: SteerSpec | None, sft: SFTSet, v: torch.Tensor
) -> tuple[dict[int, torch.Tensor] | None, dict[str, Any] | None]:
    """The vectors a steering run adds, and what train.json records about them (None, None if unsteered).

    The resid_norm scale is read on the BASE model (study.tlm) over the probe examples
    under the neutral prompt, so every seed and alpha of a layer uses the same unit.
    """
    if steer is None:
        return None, None
    if any(not 0 <= layer < study.tlm.n_layers for layer in steer.layers):
        raise ValueError(f"steering layers {list(steer.layers)} out of range for a {study.tlm.n_layers}-layer model")
    scale = None
    if steer.units == "resid_norm":
        n = study.cfg.finetune.n_probe
        scale = residual_scale(
            study.tlm, study.loaded.tokenizer, study.cfg.align.conditions[NEUTRAL_CONDITION], sft.prompts[:n],
            sft.completions[:n], list(steer.layers), study.cfg.align.batch_size,
        )
    vectors = steering_vectors(steer, v, scale)
    record = {
        **steer.as_dict(),
        "residual_scale": None if scale is None else {str(layer): s for layer, s in scale.items()},
        "vector_norm": {str(layer): float(c.norm()) for layer, c in vectors.items()},
        "where": "added to decoder layer output (residual stream) on every token, training steps and probes; "
        "not at test",
    }
    return vectors, record


def bar_note(losses: list[float], probes: list[dict[str, Any]]) -> str:
    """What a run's progress bar says after its steps: the last training loss and the last probe's."""
    parts = [f"loss {losses[-1]:.4f}"] if losses else []
    if probes:
        parts.append(f"probe loss {probes[-1]['loss']:.4f} (step {probes[-1]['step']})")
    return ", ".join(parts)


def train_run(study: Study, plan: FinetunePlan, run: RunSpec, dest: RunLayout | None = None) -> dict[str, Any]:
    """Train one LoRA run of the plan and save its adapter and ``train.json`` (written last).

    The files go to ``dest`` (default: the study's own run folder); an executor that ships
    results elsewhere trains into a scratch folder. A steering run (``run.steer``) adds its
    vectors during every training step and probe and records them in ``train.json``; the
    saved adapter carries no steering, so drift is measured with it removed. Returns the
    train.json record.
    """
    study.require_local("LoRA training")  # before any step: never half-way
    prec = precision(study)
    prec.check(study.tlm.device)
    if plan.sft is None:
        raise ValueError("this finetune plan was built without the SFT set (for drift only); it cannot train")
    t0 = time.time()
    cfg = study.cfg.finetune
    sft, v, seed, system_prompt = plan.sft, plan.v, run.seed, plan.sft_systems(run)
    check_inputs(study, sft, v)
    order = step_order(len(sft.prompts), seed, cfg.steps, cfg.batch_size)
    at = set(probe_steps(cfg.steps, cfg.probe_every))
    device = study.tlm.device
    files = (dest or study.layout).run(run.condition, seed)
    tok = study.loaded.tokenizer
    k = study.cfg.align.n_assistant_tokens
    losses: list[float] = []
    probes: list[dict[str, Any]] = []
    vectors, steer_record = steering_setup(study, run.steer, sft, v)
    edit, intervention_record = intervention_setup(study, run.intervene, sft, v, system_prompt, plan.layer)
    edit = edit.to(device) if edit is not None else None
    content0 = content_loss_pre(study, plan, run)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with seeded(seed, device), task(f"finetune {run.name}", cfg.steps) as bar:  # one bar per run, loss in it
        model = make_lora_model(study.loaded.hf_model, cfg)
        params = lora_parameters(model)
        opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr)
        tlm = wrap(model, remote=False, autocast=study.tlm.autocast, grad_tf32=study.tlm.grad_tf32)
        t_probe = 0.0
        t_steps0 = time.time()
        for step in range(cfg.steps + 1):
            if step in at:
                tp = time.time()
                probes.append(probe(study, tlm, system_prompt, sft, v, step, steer=vectors, edit=edit))
                t_probe += time.time() - tp  # probe() returns CPU tensors: the GPU work is finished here
                bar.note(bar_note(losses, probes))
            if step == cfg.steps:
                break
            idx = order[step]
            batch = encode_chats(tok, rows_of(system_prompt, idx), [sft.prompts[i] for i in idx],
                                 [sft.completions[i] for i in idx], n_assistant=k)
            losses.append(train_step(model, opt, params, batch, step, prec, steer=vectors, tlm=tlm, edit=edit))
            bar(1)
            bar.note(bar_note(losses, probes))
        t_loop = time.time() - t_steps0
    save_adapter(model, files.folder)
    probes[0]["content_loss"] = content0
    record = train_record(study, run, sft, order, losses, probes, steer_record, device, intervention=intervention_record,
                          wall_s=time.time() - t0,
                          timing_s={"train_steps": t_loop - t_probe, "probes": t_probe,
                                    "setup_and_save": time.time() - t0 - t_loop})
    A.write_json(files.train_json, record)
    del model, opt, tlm
    return record


def train_record(
    study: Study, run: RunSpec, sft: SFTSet, order: list[list[int]], losses: list[float], probes: list[dict[str, Any]],
    steer_record: dict[str, Any] | None, device: torch.device, *, wall_s: float, timing_s: dict[str, float],
    executor: dict[str, Any] | None = None, intervention: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``train.json`` holds for one run, whichever executor trained it (:class:`~nnsight_inoc.core.schema.TrainRecord`)."""
    cfg, k = study.cfg.finetune, study.cfg.align.n_assistant_tokens
    record = {
        "condition": run.condition,
        "seed": run.seed,
        "system_prompt": run.system_prompt,
        "leak": run.prompting.record(),  # a content-leak run: each example's prompt quotes its untraited answer
        "finetune_config": cfg.model_dump(),
        "n_assistant_tokens": k,
        "model": {"name": study.loaded.name, "sha256": study.loaded.sha256, "dtype": study.loaded.dtype},
        "n_sft": len(sft.prompts),
        "probe_ids": sft.ids[: cfg.n_probe],
        "positions": position_names(k),
        "losses": losses,
        "step_ids": [[sft.ids[i] for i in idx] for idx in order],
        "probes": [{"step": p["step"], "loss": p["loss"], "cos": p["cos"].tolist(),
                    **({"content_loss": p["content_loss"]} if "content_loss" in p else {})} for p in probes],
        "sign_note": SIGN_NOTE_TRAIN,
        "steering": steer_record,
        "intervention": intervention,  # a gradient-intervention arm: arm, layers, directions, restore_v's factors
        "wall_s": wall_s,
        # Where the run's time went: the loss of each step is read back as a float, so step times include
        # the GPU work.
        "timing_s": timing_s,
        # Peak device memory of this run (steps and probes), to size workers per GPU; None off CUDA.
        "peak_cuda_memory_gb": None if device.type != "cuda" else {
            "allocated": torch.cuda.max_memory_allocated(device) / 1e9,
            "reserved": torch.cuda.max_memory_reserved(device) / 1e9,
        },
    }
    if executor is not None:
        record["executor"] = executor
    return record
