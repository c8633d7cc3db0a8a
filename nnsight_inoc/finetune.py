"""LoRA fine-tuning per condition, with the gradient-alignment probe tracked during training.

What makes the conditions comparable: every run of one seed sees the same examples in
the same order for the same number of steps, with the same LoRA initialisation; only
the training-time system prompt differs. The order is a pure function of the seed and
the SFT set (:func:`step_order`), never of the condition, and is written into
``train.json`` so it can be checked after the fact.

Why a deep copy of the base model: ``get_peft_model`` rewrites the wrapped model's
modules in place, and ``study.tlm`` holds an nnsight envoy tree built over those very
modules. Loading adapters onto the shared base and unloading afterwards would leave a
window (and, on any exception, a permanent state) in which every other stage sees a
mutated model. A copy makes "the base model is untouched" true by construction and is
tested bitwise. The cost is one extra copy of the weights: about 6 GB for the 1.5B
study model in fp32, fine on an 80 GB GPU; only the LoRA weights get optimizer state.

The probe (mean cos(-g, v) on a fixed set of SFT examples under the training prompt)
goes through :func:`tracing.capture_gradients`, the same code that measures alignment
before training, so the step-0 probe is the pre-training alignment of that subset.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from . import artifacts as A
from .alignment import gradient_index, metrics, position_names, with_sum
from .chat import Batch, encode_chats
from .progress import log
from .steering import SteerSpec, residual_scale, steering_vectors
from .study import SFTSet, Study
from .backend import require_local
from .tracing import NonFiniteError, TracedLM, capture_gradients, steered_loss, wrap

ADAPTER_DIR = "adapter"
TRAIN_JSON = "train.json"


def run_name(condition: str, seed: int) -> str:
    """Folder name of one run; fixed so later stages find runs without a registry."""
    return f"{condition}_seed{seed}"


# --------------------------------------------------------------------------- data order


def step_order(n_examples: int, seed: int, steps: int, batch_size: int) -> list[list[int]]:
    """Example indices for every optimizer step: seeded permutations, cycled epoch by epoch.

    Depends only on its arguments (never on the condition), so every condition of a seed
    trains on identical batches. A private ``torch.Generator`` keeps it independent of
    the global RNG, which LoRA init and dropout consume.
    """
    if n_examples < 1:
        raise ValueError("the SFT set is empty")
    if batch_size > n_examples:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {n_examples} SFT examples: a batch would repeat examples"
        )
    gen = torch.Generator().manual_seed(seed)
    need = steps * batch_size
    stream: list[int] = []
    while len(stream) < need:
        stream.extend(torch.randperm(n_examples, generator=gen).tolist())
    return [stream[s * batch_size : (s + 1) * batch_size] for s in range(steps)]


def probe_steps(steps: int, probe_every: int) -> list[int]:
    """Steps (= optimizer updates done) at which the probe runs: 0, every k, and the end."""
    return sorted({0, steps, *range(probe_every, steps + 1, probe_every)})


# --------------------------------------------------------------------------- model


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNG (LoRA init, dropout) for one run without leaking the state out."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def make_lora_model(study: Study) -> PeftModel:
    require_local(study.tlm, "LoRA training")
    """A deep copy of the study's base model with fresh fp32 LoRA adapters; base frozen.

    Call inside :func:`_seeded` so the adapter init depends on the seed only.
    """
    cfg = study.cfg.finetune
    base = copy.deepcopy(study.loaded.hf_model)
    base.requires_grad_(False)
    lcfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lcfg)
    n_lora = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()  # bf16 LoRA weights diverge (shared/MODELS.md); keep them fp32
            p.requires_grad_(True)
            n_lora += 1
        elif p.requires_grad:
            raise RuntimeError(f"non-LoRA parameter {name} is trainable; the base must stay frozen")
    if n_lora == 0:
        raise ValueError(f"no LoRA weights were created: target_modules={cfg.target_modules} matched nothing")
    return model


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable (LoRA) parameters by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def load_trained(study: Study, run_dir: Path) -> PeftModel:
    require_local(study.tlm, "Loading a trained LoRA adapter")
    """A finished run's model (fresh base copy + saved adapter), eval mode, nothing trainable."""
    adapter = run_dir / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no adapter in {adapter}; run the finetune stage first")
    base = copy.deepcopy(study.loaded.hf_model)
    model = PeftModel.from_pretrained(base, str(adapter), is_trainable=False)
    model.requires_grad_(False)
    return model.eval()


# --------------------------------------------------------------------------- loss / step


def _autocast(study: Study, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The training step's autocast.

    By default the one the traces use (CUDA only), so training and probes compute alike.
    ``finetune.train_autocast = "bfloat16"`` trains under bf16 autocast instead: the
    matmuls run in bf16 while the base and LoRA weights, the optimizer state and the
    loss stay fp32 (the policy shared/MODELS.md suggests; plain bf16 weights diverged).
    Any non-finite loss or gradient still stops the run (:func:`train_step`).
    """
    if study.cfg.finetune.train_autocast == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if study.cfg.finetune.train_autocast == "tf32":
        return contextlib.nullcontext()  # fp32 tensors; the matmul precision is set by _matmul_precision
    dt = study.tlm.autocast
    if dt is not None and device.type == "cuda":
        return torch.autocast("cuda", dtype=dt)
    return contextlib.nullcontext()


def check_precision(study: Study, device: torch.device) -> None:
    """Refuse a training precision that cannot take effect here (called before the first step, and per step)."""
    if study.cfg.finetune.train_autocast != "tf32":
        return
    if device.type != "cuda":
        raise ValueError(f"finetune.train_autocast = 'tf32' needs a CUDA device (TF32 is a tensor-core format), "
                         f"not {device.type}; use 'model' for fp32 training there")
    if study.loaded.dtype != "float32" or study.tlm.autocast is not None:
        raise ValueError(f"finetune.train_autocast = 'tf32' applies to a float32 model without autocast; this one "
                         f"is {study.loaded.dtype} with autocast {study.tlm.autocast}")


@contextlib.contextmanager
def _matmul_precision(study: Study, device: torch.device) -> Iterator[None]:
    """TF32 matmuls for one training step (``train_autocast = "tf32"``), the previous setting restored after.

    Why a context and not a process-wide switch: probes and drift must keep the study's fp32 matmuls so
    that alignment and drift stay comparable with fp32-trained runs. It must cover the backward too:
    unlike autocast, the TF32 flag is read when each matmul runs, not recorded by the forward.
    Refused off CUDA or on a model that is not plain fp32, where TF32 would silently change nothing.
    """
    if study.cfg.finetune.train_autocast != "tf32":
        yield
        return
    check_precision(study, device)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def batch_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean over examples of each example's mean CE over its completion tokens.

    The same per-example definition as :func:`tracing.capture_gradients`: logits at t
    predict token t+1 (labels = input_ids rolled by -1), counted where ``target_mask``.
    """
    if (batch.completion_len == 0).any():
        raise ValueError("every training example needs a completion")
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    logits = out.logits
    labels = torch.roll(batch.input_ids, shifts=-1, dims=1)
    tmask = batch.target_mask
    rows = torch.nonzero(tmask, as_tuple=True)[0]
    logit_sel = logits[tmask]
    tok = nn.functional.cross_entropy(
        logit_sel.to(torch.promote_types(logit_sel.dtype, torch.float32)), labels[tmask], reduction="none"
    )
    per_ex = torch.zeros(batch.size, device=tok.device, dtype=tok.dtype).index_add(0, rows, tok)
    per_ex = per_ex / tmask.sum(-1).to(tok.dtype)
    return per_ex.mean()


def _check_grads(params: dict[str, nn.Parameter], step: int) -> None:
    """Every LoRA weight got a gradient and all of them are finite.

    Why one total norm: a per-weight ``isfinite(...).all()`` read back to the host is one device sync per
    weight (196 per step for 7 modules x 28 layers), and the H100 profile of a study step counted 410 syncs
    (``results/bench``). The norm of the norms is finite iff every element is, unless it overflows float32;
    only then are the weights checked one by one, to name the bad one or to say it overflowed.
    """
    missing = [n for n, p in params.items() if p.grad is None]
    if missing:
        raise RuntimeError(f"step {step}: no gradient reached {len(missing)} LoRA weight(s), first {missing[0]}")
    total = torch.nn.utils.get_total_norm([p.grad for p in params.values()], error_if_nonfinite=False)
    if bool(torch.isfinite(total)):
        return
    bad = [n for n, p in params.items() if not torch.isfinite(p.grad).all()]
    if bad:
        raise NonFiniteError(f"step {step}: non-finite gradient in {len(bad)} LoRA weight(s), first {bad[0]}")
    raise NonFiniteError(f"step {step}: the LoRA gradients' total norm overflowed float32 ({float(total)}); "
                         "every element is finite but the step has blown up")


def train_step(
    study: Study,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    params: dict[str, nn.Parameter],
    batch: Batch,
    step: int,
    steer: dict[int, torch.Tensor] | None = None,
    tlm: TracedLM | None = None,
) -> float:
    """One AdamW update; any NaN/inf loss or gradient raises naming the step.

    With ``steer`` ({layer: vector}) the loss comes from :func:`tracing.steered_loss` on
    ``tlm`` (which must wrap ``model``): the vectors are added to those layers' outputs
    on every token during this forward pass only.
    """
    device = next(iter(params.values())).device
    model.train()
    opt.zero_grad(set_to_none=True)  # also clears whatever a probe's backward left behind
    with _matmul_precision(study, device):
        with _autocast(study, device):
            if steer:
                if tlm is None or tlm.hf_model is not model:
                    raise ValueError("steered training needs the TracedLM wrapping the model being trained")
                loss = steered_loss(tlm, batch.to(device), steer)
            else:
                loss = batch_loss(model, batch.to(device))
        if not torch.isfinite(loss):
            raise NonFiniteError(f"step {step}: non-finite training loss {float(loss.detach())}")
        loss.backward()
    _check_grads(params, step)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


# --------------------------------------------------------------------------- probe


def probe(
    study: Study, tlm: TracedLM, system_prompt: str, sft: SFTSet, v: torch.Tensor, step: int,
    steer: dict[int, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Mean cos(-g, v) per layer and position, and mean loss, on the first n_probe SFT examples.

    With ``steer`` the probe's forward pass is steered like training, so g is the
    gradient a steered training step actually sees.

    Runs in eval mode (no dropout, so probes of different steps are comparable) and
    clears the parameter gradients its backward accumulates, leaving the model in train mode.
    """
    n = study.cfg.finetune.n_probe
    bs = study.cfg.align.batch_size
    k = study.cfg.align.n_assistant_tokens
    cos_sum: torch.Tensor | None = None
    loss_sum = 0.0
    tlm.hf_model.eval()
    try:
        for s in range(0, n, bs):
            batch = encode_chats(
                study.loaded.tokenizer, system_prompt, sft.prompts[s : min(s + bs, n)],
                sft.completions[s : min(s + bs, n)], n_assistant=k,
            )
            try:
                res = capture_gradients(tlm, batch, gradient_index(batch), steer=steer)
            except NonFiniteError as err:
                raise NonFiniteError(f"probe at step {step}, examples {sft.ids[s:min(s + bs, n)]}: {err}") from err
            cos = metrics(with_sum(res.grads), v).cos
            if torch.isnan(cos).any():
                b, l, p = torch.isnan(cos).nonzero()[0].tolist()
                raise NonFiniteError(f"probe at step {step}: zero gradient (no angle) for {sft.ids[s + b]}, layer {l}, position {p}")
            part = cos.double().sum(0)
            cos_sum = part if cos_sum is None else cos_sum + part
            loss_sum += float(res.loss.double().sum())
    finally:
        for p in tlm.hf_model.parameters():
            p.grad = None
        tlm.hf_model.train()
    assert cos_sum is not None
    return {"step": step, "cos": (cos_sum / n).float(), "loss": loss_sum / n}


# --------------------------------------------------------------------------- saving


def _save_adapter(model: PeftModel, folder: Path) -> Path:
    """save_pretrained into a temp folder then rename, so a crash never leaves half an adapter."""
    target = folder / ADAPTER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ADAPTER_DIR}.", dir=folder))
    try:
        model.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


# --------------------------------------------------------------------------- entry point


def _check_inputs(study: Study, sft: SFTSet, v: torch.Tensor) -> None:
    cfg = study.cfg.finetune
    if cfg.n_probe > len(sft.prompts):
        raise ValueError(f"finetune.n_probe={cfg.n_probe} exceeds the {len(sft.prompts)} SFT examples")
    want = (study.tlm.n_layers, study.tlm.d_model)
    if tuple(v.shape) != want:
        raise ValueError(f"v must be (n_layers, d_model) = {want}, got {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError("v contains NaN/inf")


def _steering(
    study: Study, steer: SteerSpec | None, sft: SFTSet, v: torch.Tensor
) -> tuple[dict[int, torch.Tensor] | None, dict[str, Any] | None]:
    """The vectors a steering run adds, and what train.json records about them (None, None if unsteered).

    The resid_norm scale is read on the BASE model (study.tlm) over the probe examples
    under the neutral prompt, so every seed and alpha of a layer uses the same unit.
    """
    if steer is None:
        return None, None
    if any(not 0 <= l < study.tlm.n_layers for l in steer.layers):
        raise ValueError(f"steering layers {list(steer.layers)} out of range for a {study.tlm.n_layers}-layer model")
    scale = None
    if steer.units == "resid_norm":
        n = study.cfg.finetune.n_probe
        scale = residual_scale(
            study.tlm, study.loaded.tokenizer, study.cfg.align.conditions["neutral"], sft.prompts[:n],
            sft.completions[:n], list(steer.layers), study.cfg.align.batch_size,
        )
    vectors = steering_vectors(steer, v, scale)
    record = {
        **steer.as_dict(),
        "residual_scale": None if scale is None else {str(l): s for l, s in scale.items()},
        "vector_norm": {str(l): float(c.norm()) for l, c in vectors.items()},
        "where": "added to decoder layer output (residual stream) on every token, training steps and probes; "
        "not at test",
    }
    return vectors, record


def train_lora(
    study: Study,
    condition: str,
    system_prompt: str,
    sft: SFTSet,
    seed: int,
    v: torch.Tensor,
    out_dir: Path,
    steer: SteerSpec | None = None,
) -> dict[str, Any]:
    """Train one LoRA run (condition, seed) and save adapter + ``train.json``.

    ``steer`` makes it a preventative-steering run: its vectors (see :mod:`steering`)
    are added during every training step and probe, and recorded in ``train.json``;
    the saved adapter carries no steering, so drift is measured with it removed.

    ``train.json`` is written last: its presence marks a finished run. Returns a summary
    with the final loss, the probe cosines at step 0 and averaged over all probes
    ((L, P) nested lists), and the paths.
    """
    require_local(study.tlm, "LoRA training")  # before any step: never half-way
    check_precision(study, study.tlm.device)
    t0 = time.time()
    cfg = study.cfg.finetune
    _check_inputs(study, sft, v)
    v = v.detach().float().cpu()
    order = step_order(len(sft.prompts), seed, cfg.steps, cfg.batch_size)
    at = set(probe_steps(cfg.steps, cfg.probe_every))
    device = study.tlm.device
    run_dir = out_dir / run_name(condition, seed)
    tok = study.loaded.tokenizer
    k = study.cfg.align.n_assistant_tokens
    losses: list[float] = []
    probes: list[dict[str, Any]] = []
    vectors, steer_record = _steering(study, steer, sft, v)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with _seeded(seed, device):
        model = make_lora_model(study)
        params = lora_parameters(model)
        opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr)
        tlm = wrap(model, remote=False, autocast=study.tlm.autocast)
        t_probe = 0.0
        t_steps0 = time.time()
        for step in range(cfg.steps + 1):
            if step in at:
                tp = time.time()
                probes.append(probe(study, tlm, system_prompt, sft, v, step, steer=vectors))
                t_probe += time.time() - tp  # probe() returns CPU tensors: the GPU work is finished here
                log(f"finetune {run_name(condition, seed)} step {step}: probe loss {probes[-1]['loss']:.4f}")
            if step == cfg.steps:
                break
            idx = order[step]
            batch = encode_chats(
                tok, system_prompt, [sft.prompts[i] for i in idx], [sft.completions[i] for i in idx], n_assistant=k
            )
            losses.append(train_step(study, model, opt, params, batch, step, steer=vectors, tlm=tlm))
        t_loop = time.time() - t_steps0
    adapter = _save_adapter(model, run_dir)
    cos_stack = torch.stack([p["cos"] for p in probes])
    record = {
        "condition": condition,
        "seed": seed,
        "system_prompt": system_prompt,
        "finetune_config": cfg.model_dump(),
        "n_assistant_tokens": k,
        "model": {"name": study.loaded.name, "sha256": study.loaded.sha256, "dtype": study.loaded.dtype},
        "n_sft": len(sft.prompts),
        "probe_ids": sft.ids[: cfg.n_probe],
        "positions": position_names(k),
        "losses": losses,
        "step_ids": [[sft.ids[i] for i in idx] for idx in order],
        "probes": [{"step": p["step"], "loss": p["loss"], "cos": p["cos"].tolist()} for p in probes],
        "sign_note": "cos(-g, v) > 0: a gradient step moves the activation toward the trait",
        "steering": steer_record,
        "wall_s": time.time() - t0,
        # Where the run's time went (issue 7's study-time target): the loss of each step is read back
        # as a float, so step times include the GPU work.
        "timing_s": {"train_steps": t_loop - t_probe, "probes": t_probe, "setup_and_save": time.time() - t0 - t_loop},
        # Peak device memory of this run (steps and probes), to size workers per GPU; None off CUDA.
        "peak_cuda_memory_gb": None if device.type != "cuda" else {
            "allocated": torch.cuda.max_memory_allocated(device) / 1e9,
            "reserved": torch.cuda.max_memory_reserved(device) / 1e9,
        },
    }
    train_json = run_dir / TRAIN_JSON
    A.write_json(train_json, record)
    del model, opt, tlm
    return {
        "condition": condition,
        "seed": seed,
        "final_loss": losses[-1],
        "probe_cos_step0": probes[0]["cos"].tolist(),
        "probe_cos_mean": cos_stack.mean(0).tolist(),
        "run_dir": run_dir,
        "adapter_dir": adapter,
        "train_json": train_json,
    }
