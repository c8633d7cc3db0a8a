"""One LoRA run's mechanics: the adapted model, its precision policy, one AdamW step, saving and loading.

What makes the conditions comparable: every run of one seed starts from the same LoRA
initialisation (:func:`seeded`: the global RNG seeded with the run's seed) and trains on the
same batches (:mod:`.order`); only the training-time system prompt differs.

Why a deep copy of the base model: ``get_peft_model`` rewrites the wrapped model's modules in
place, and the study's traced model holds an nnsight envoy tree built over those very
modules. Loading adapters onto the shared base and unloading afterwards would leave a window
(and, on any exception, a permanent state) in which every other stage sees a mutated model.
A copy makes "the base model is untouched" true by construction and is tested bitwise. The
cost is one extra copy of the weights: about 6 GB for the 1.5B study model in fp32; only the
LoRA weights get optimizer state. The grouped executor (:mod:`.grouped`) avoids the copy.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from nnsight_inoc.core.artifacts import folder_written_atomically
from nnsight_inoc.core.config import FinetuneConfig
from nnsight_inoc.core.layout import ADAPTER_DIR
from nnsight_inoc.trace.chat import Batch
from nnsight_inoc.trace.edit import GradEdit
from nnsight_inoc.trace.intervened import intervened_step_losses
from nnsight_inoc.trace.loss import NonFiniteError, loss_targets, per_example_loss
from nnsight_inoc.trace.tracing import TracedLM, steered_loss


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNG (LoRA init, dropout) for one run without leaking the state out."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def lora_config(cfg: FinetuneConfig) -> LoraConfig:
    """PEFT's config for the study's adapters (rank, alpha, dropout, target modules)."""
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")


def make_lora_model(base_model: nn.Module, cfg: FinetuneConfig) -> PeftModel:
    """A deep copy of ``base_model`` with fresh fp32 LoRA adapters; the copied base frozen.

    Call inside :func:`seeded` so the adapter init depends on the seed only. ValueError when
    ``target_modules`` match nothing; RuntimeError if a non-LoRA parameter is trainable.
    """
    base = copy.deepcopy(base_model)
    base.requires_grad_(False)
    model = get_peft_model(base, lora_config(cfg))
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


def load_trained(base_model: nn.Module, run_dir: Path) -> PeftModel:
    """A finished run's model (fresh copy of ``base_model`` + saved adapter), eval mode, nothing trainable.

    FileNotFoundError when the run has no adapter.
    """
    adapter = run_dir / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no adapter in {adapter}; run the finetune stage first")
    model = PeftModel.from_pretrained(copy.deepcopy(base_model), str(adapter), is_trainable=False)
    model.requires_grad_(False)
    return model.eval()


@dataclass(frozen=True)
class Precision:
    """The training steps' precision policy (``finetune.train_autocast``), checked before the first step.

    * ``model``: the study's own (``model.dtype``, and ``model.autocast`` on CUDA), so training and
      probes compute alike;
    * ``bfloat16``: bf16 autocast over the fp32 base and fp32 LoRA weights (the matmuls in bf16; the
      weights, optimizer state and loss stay fp32: the policy shared/MODELS.md suggests);
    * ``tf32`` (CUDA only, fp32 model without autocast): fp32 tensors with the forward and backward
      matmuls on TF32 tensor cores.

    Probes and drift always use the study's precision, so alignment and drift stay comparable
    across this setting.
    """

    train_autocast: str  # "model" | "bfloat16" | "tf32"
    model_dtype: str  # the loaded weights' dtype name, e.g. "float32"
    model_autocast: torch.dtype | None  # the traces' autocast dtype (CUDA only), None for none

    def check(self, device: torch.device) -> None:
        """Refuse a policy that cannot take effect on ``device`` (ValueError naming the setting)."""
        if self.train_autocast != "tf32":
            return
        if device.type != "cuda":
            raise ValueError(f"finetune.train_autocast = 'tf32' needs a CUDA device (TF32 is a tensor-core format), "
                             f"not {device.type}; use 'model' for fp32 training there")
        if self.model_dtype != "float32" or self.model_autocast is not None:
            raise ValueError(f"finetune.train_autocast = 'tf32' applies to a float32 model without autocast; this one "
                             f"is {self.model_dtype} with autocast {self.model_autocast}")

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The training step's autocast context (TF32 is set by :meth:`matmul_precision`, not here)."""
        if self.train_autocast == "bfloat16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        if self.train_autocast == "tf32":
            return contextlib.nullcontext()
        if self.model_autocast is not None and device.type == "cuda":
            return torch.autocast("cuda", dtype=self.model_autocast)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def matmul_precision(self, device: torch.device) -> Iterator[None]:
        """TF32 matmuls for one training step (``tf32``), the previous setting restored after.

        Why a context and not a process-wide switch: probes and drift must keep the study's fp32
        matmuls. It must cover the backward too: unlike autocast, the TF32 flag is read when each
        matmul runs, not recorded by the forward.
        """
        if self.train_autocast != "tf32":
            yield
            return
        self.check(device)
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(before)


def batch_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean over examples of each example's mean CE over its completion tokens (the training loss).

    The per-example loss is :func:`nnsight_inoc.trace.loss.per_example_loss`, the one the traces
    use, so training descends exactly the loss whose gradient the align stage measures.
    """
    if (batch.completion_len == 0).any():
        raise ValueError("every training example needs a completion")
    targets = loss_targets(batch)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                logits_to_keep=targets.window)
    return per_example_loss(out.logits, targets).mean()


def check_grads(params: dict[str, nn.Parameter], step: int) -> None:
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
    model: nn.Module,
    opt: torch.optim.Optimizer,
    params: dict[str, nn.Parameter],
    batch: Batch,
    step: int,
    precision: Precision,
    steer: dict[int, torch.Tensor] | None = None,
    tlm: TracedLM | None = None,
    edit: GradEdit | None = None,
) -> float:
    """One AdamW update; returns the loss. Any NaN/inf loss or gradient raises naming the step.

    With ``steer`` ({layer: vector}) the loss comes from :func:`~nnsight_inoc.trace.tracing.steered_loss`
    on ``tlm`` (which must wrap ``model``): the vectors are added to those layers' outputs on every
    token during this forward pass only. With ``edit`` (a gradient-intervention arm, one run) the
    forward and the edited backward pass run in one trace on ``tlm``
    (:func:`~nnsight_inoc.trace.intervened.intervened_step_losses`), inside the same autocast and
    matmul-precision contexts.
    """
    device = next(iter(params.values())).device
    model.train()
    opt.zero_grad(set_to_none=True)  # also clears whatever a probe's backward left behind
    if (steer or edit is not None) and (tlm is None or tlm.hf_model is not model):
        raise ValueError("steered or intervened training needs the TracedLM wrapping the model being trained")
    with precision.matmul_precision(device):
        with precision.autocast(device):
            if edit is not None:
                assert tlm is not None
                loss = intervened_step_losses(tlm, batch.to(device), edit, steer)[0]
            elif steer:
                assert tlm is not None
                loss = steered_loss(tlm, batch.to(device), steer)
            else:
                loss = batch_loss(model, batch.to(device))
        if not torch.isfinite(loss):
            raise NonFiniteError(f"step {step}: non-finite training loss {float(loss.detach())}")
        if edit is None:
            loss.backward()
    check_grads(params, step)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def save_adapter(model: PeftModel, folder: Path) -> Path:
    """save_pretrained into a temp folder then rename, so a crash never leaves half an adapter."""
    target = folder / ADAPTER_DIR
    with folder_written_atomically(target) as tmp:
        model.save_pretrained(str(tmp))
    return target
