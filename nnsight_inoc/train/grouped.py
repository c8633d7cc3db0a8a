"""K LoRA runs of one seed trained in one forward/backward pass of a shared frozen base.

Why: the study's runs of one seed differ only in the training-time system prompt; they see
the same examples in the same order from the same LoRA init. Stacking their adapters lets K
runs share the base model's forward and backward (and its memory) instead of one deep copy
per run. Row block k of every batch (``rows_per_group`` contiguous rows) belongs to run k,
and every target ``nn.Linear`` gets ``scale * B_k (A_k x)`` added to the output rows of block
k (batched over k, never a Python loop). Rows do not interact in a causal LM forward, and
the step's loss is the sum of the runs' own losses, so run k's gradient, and with
elementwise AdamW its whole trajectory, is that of run k trained alone (pinned against real
PEFT runs in ``tests/train/test_grouped.py``).

PEFT is not used for the forward because its LoRA layers apply one adapter per batch in
training mode (per-row ``adapter_names`` is inference only). Saving and loading in PEFT's
own folder format lives in :mod:`.grouped_io`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nnsight_inoc.models.checkpointing import activation_checkpointing
from nnsight_inoc.trace.chat import Batch
from nnsight_inoc.trace.edit import GradEdit
from nnsight_inoc.trace.intervened import intervened_step_losses
from nnsight_inoc.trace.loss import NonFiniteError, loss_targets, per_example_loss
from nnsight_inoc.trace.tracing import TracedLM
from nnsight_inoc.train.lora import Precision


class NonFiniteRunError(NonFiniteError):
    """A grouped run's loss or LoRA gradient is NaN/inf; the message names the run (slot) and module."""


def matching_modules(model: nn.Module, target_modules: Sequence[str]) -> list[tuple[str, nn.Linear]]:
    """The modules PEFT would wrap for ``LoraConfig(target_modules=[...])``, in ``named_modules()`` order.

    PEFT's rule for a list (``peft.tuners.tuners_utils.check_target_module_exists``): a module
    matches when its full name equals a target or ends with ``"." + target``. A plain string
    (PEFT's regex form) is refused rather than reinterpreted. Raises ValueError when nothing
    matches or a match is not an ``nn.Linear``.
    """
    if isinstance(target_modules, str) or not target_modules:
        raise ValueError(f"target_modules must be a non-empty list of module names, got {target_modules!r}")
    targets = list(target_modules)
    hits: list[tuple[str, nn.Linear]] = []
    for name, mod in model.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        if type(mod) is not nn.Linear:
            raise ValueError(f"target module {name} is a {type(mod).__name__}; grouped LoRA supports nn.Linear only")
        hits.append((name, mod))
    if not hits:
        raise ValueError(f"target_modules={targets} matched no module of {type(model).__name__}")
    return hits


@dataclass(eq=False)  # identity equality: fields hold tensors
class GroupedLora:
    """Stacked LoRA weights of K runs for every target module.

    ``A[i]``: (K, r, in_features) and ``B[i]``: (K, out_features, r) fp32 parameters of module
    ``names[i]`` (``named_modules()`` names of the causal LM, in that order); the update of run
    k is ``scale * B[i][k] @ A[i][k]`` with ``scale = alpha / r`` (PEFT without rsLoRA).
    ``dropout`` is recorded for saving only: the hooks never apply dropout and refuse to run
    in training mode when it is > 0.
    """

    names: list[str]
    A: list[nn.Parameter]
    B: list[nn.Parameter]
    r: int
    alpha: float
    target_modules: list[str]
    dropout: float = 0.0
    _attached: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.A) == len(self.B)) or not self.names:
            raise ValueError(f"names, A and B must have one entry per module: {len(self.names)}, "
                             f"{len(self.A)}, {len(self.B)}")
        k = self.A[0].shape[0]
        for name, a, b in zip(self.names, self.A, self.B):
            if a.dim() != 3 or b.dim() != 3 or a.shape[0] != k or b.shape[0] != k:
                raise ValueError(f"{name}: A must be (K, r, in) and B (K, out, r) with K={k}; got "
                                 f"{tuple(a.shape)} and {tuple(b.shape)}")
            if a.shape[1] != self.r or b.shape[2] != self.r:
                raise ValueError(f"{name}: rank of A {tuple(a.shape)} / B {tuple(b.shape)} is not r={self.r}")

    @property
    def k(self) -> int:
        """Number of runs (slots)."""
        return int(self.A[0].shape[0])

    @property
    def scale(self) -> float:
        """PEFT's ``scaling = lora_alpha / r``."""
        return self.alpha / self.r

    def parameters(self) -> list[nn.Parameter]:
        """Every stacked weight, A and B per module in module order (what the optimiser gets)."""
        return [p for pair in zip(self.A, self.B) for p in pair]

    def slot(self, k: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Run k's weights by module name: (A (r, in), B (out, r)), detached views."""
        if not 0 <= k < self.k:
            raise IndexError(f"slot {k} out of range for {self.k} runs")
        return {n: (a[k].detach(), b[k].detach()) for n, a, b in zip(self.names, self.A, self.B)}

    @contextlib.contextmanager
    def attached(self, model: nn.Module, rows_per_group: int | None = None) -> Iterator[None]:
        """Forward hooks on ``model``'s target Linears adding run k's update to row block k.

        Every forward inside the context (training, an nnsight trace of ``model``, ``generate``
        with a KV cache, where later steps have T=1) must have ``K * rows_per_group`` rows in
        run order (``rows_per_group=None``: any multiple of K, split into K equal blocks, for
        loops whose last batch is smaller); any other row count raises ValueError. The model itself is never changed:
        every hook is removed in ``finally``. Nesting is refused (the updates would add twice).

        In an nnsight trace the updates reach everything downstream (decoder-layer outputs,
        logits, gradients), but nnsight's ``.output`` of a target Linear itself shows the base
        output without the update: nnsight reads it before hooks registered after wrapping run
        (pinned in the tests). Gradients reach A and B when they require grad.
        """
        if rows_per_group is not None and rows_per_group < 1:
            raise ValueError(f"rows_per_group must be >= 1, got {rows_per_group}")
        if self._attached:
            raise RuntimeError("this GroupedLora is already attached; leave that context first")
        modules = self._resolve(model)
        handles = []
        self._attached = True
        try:
            for i, mod in enumerate(modules):
                handles.append(mod.register_forward_hook(self._hook(i, rows_per_group), with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()
            self._attached = False

    def _resolve(self, model: nn.Module) -> list[nn.Linear]:
        """The target modules of ``model``, checked against the stacked shapes and devices."""
        found = dict(matching_modules(model, self.target_modules))
        if list(found) != self.names:
            raise ValueError(f"model's target modules {list(found)[:3]}... differ from this GroupedLora's "
                             f"{self.names[:3]}... ({len(found)} vs {len(self.names)})")
        out = []
        for name, a, b in zip(self.names, self.A, self.B):
            mod = found[name]
            if (a.shape[2], b.shape[1]) != (mod.in_features, mod.out_features):
                raise ValueError(f"{name}: LoRA shapes A {tuple(a.shape)}, B {tuple(b.shape)} do not fit "
                                 f"Linear({mod.in_features}, {mod.out_features})")
            if a.device != mod.weight.device or b.device != mod.weight.device:
                raise ValueError(f"{name}: LoRA weights on {a.device} but the module on {mod.weight.device}")
            out.append(mod)
        return out

    def _hook(self, i: int, rows: int | None) -> Callable[..., torch.Tensor]:
        a, b, name, k, scale = self.A[i], self.B[i], self.names[i], self.k, self.scale

        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor) -> torch.Tensor:
            x = args[0] if args else kwargs["input"]
            n = x.shape[0] if x.dim() >= 2 else 0
            if rows is not None and n != k * rows:
                raise ValueError(f"{name}: batch has {n} rows, grouped LoRA expects "
                                 f"K x rows_per_group = {k} x {rows} = {k * rows} (row block k = run k)")
            if rows is None and (n == 0 or n % k):
                raise ValueError(f"{name}: batch has {n} rows, not K = {k} equal row blocks (row block k = run k)")
            if self.dropout > 0 and mod.training:
                raise ValueError(f"lora_dropout={self.dropout} cannot be applied by grouped LoRA; use eval mode")
            # Same arithmetic as peft.tuners.lora.layer.Linear.forward: x cast to the LoRA dtype,
            # (x A^T) B^T * scaling added to the base output, result cast back to its dtype.
            xg = x.reshape(k, -1, x.shape[-1]).to(a.dtype)  # (K, rows * T, in): block k = run k
            delta = torch.bmm(torch.bmm(xg, a.transpose(1, 2)), b.transpose(1, 2)) * scale
            return (out + delta.reshape(out.shape)).to(out.dtype)

        return hook


def fresh(
    model: nn.Module, k: int, r: int, alpha: float, target_modules: Sequence[str], dropout: float = 0.0
) -> GroupedLora:
    """K copies of the LoRA init that ``get_peft_model`` would give ``model`` at the current RNG state.

    PEFT 0.21 (``peft/tuners/lora/layer.py``, ``LoraLayer.update_layer``), per target module
    in ``named_modules()`` order, draws from the global RNG three times: ``nn.Linear(in, r)``
    and ``nn.Linear(r, out)`` each run their own ``reset_parameters`` (kaiming-uniform,
    a=sqrt(5), no bias since ``lora_bias=False``), then ``reset_lora_parameters`` draws A again
    the same way and zeroes B. The adapter is made in the default dtype and device, then cast
    to the base layer's dtype (``_move_adapter_to_device_of_base_layer``) and back to fp32
    (``autocast_adapter_dtype``). This replays exactly those draws on fresh tensors, so the
    base model is neither copied nor changed, and leaves the RNG where PEFT would.

    Raises ValueError for ``dropout > 0`` (PEFT's per-run dropout masks consume the RNG in a
    way one grouped pass cannot reproduce), ``k < 1``, ``r < 1``, or targets matching nothing.
    """
    if dropout > 0:
        raise ValueError(f"lora_dropout={dropout}: dropout masks of separate runs cannot be matched by grouped "
                         "training; use lora_dropout=0")
    if k < 1 or r < 1:
        raise ValueError(f"need k >= 1 runs and rank r >= 1, got k={k}, r={r}")
    names, As, Bs = [], [], []
    for name, mod in matching_modules(model, target_modules):
        w = mod.weight
        for shape in ((r, mod.in_features), (mod.out_features, r)):  # the two nn.Linear constructors
            nn.init.kaiming_uniform_(torch.empty(shape), a=math.sqrt(5))
        a = torch.empty(r, mod.in_features)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        a = a.to(w.dtype).to(device=w.device, dtype=torch.float32)
        names.append(name)
        As.append(nn.Parameter(a.unsqueeze(0).repeat(k, 1, 1)))
        Bs.append(nn.Parameter(torch.zeros(k, mod.out_features, r, device=w.device)))
    return GroupedLora(names, As, Bs, r=r, alpha=alpha, target_modules=list(target_modules), dropout=dropout)


def grouped_loss(model: nn.Module, batch: Batch, k: int) -> torch.Tensor:
    """Each run's training loss, (k,): mean over its rows of each row's mean CE over its completion tokens.

    :func:`nnsight_inoc.train.lora.batch_loss`'s definition (the one per-example loss of
    :mod:`nnsight_inoc.trace.loss`, logits of the completion window only) applied per row block.
    Call inside :meth:`GroupedLora.attached`; summing the result gives a loss whose gradient in
    slot k is run k's own.
    """
    n = int(batch.input_ids.shape[0])
    if n % k:
        raise ValueError(f"{n} rows cannot be split into {k} equal run blocks")
    if (batch.completion_len == 0).any():
        raise ValueError("every training example needs a completion")
    targets = loss_targets(batch)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                logits_to_keep=targets.window, use_cache=False)
    return per_example_loss(out.logits, targets).reshape(k, n // k).mean(1)


def check_step(grouped: GroupedLora, losses: torch.Tensor, step: int) -> list[float]:
    """Every run's loss and LoRA gradients are finite; returns the losses as floats.

    One device-to-host copy for the whole step: the per-run losses and the per-run norm of
    every weight's gradient travel together (a norm is finite iff its elements are, unless it
    overflows). Only when something is not finite are the weights checked one by one, to
    name the first bad run and module (or to say the norm overflowed).
    """
    missing = [n for n, a, b in zip(grouped.names, grouped.A, grouped.B) if a.grad is None or b.grad is None]
    if missing:
        raise RuntimeError(f"step {step}: no gradient reached the LoRA weights of {missing[0]} "
                           f"({len(missing)} module(s))")
    norms = [torch.linalg.vector_norm(p.grad.float(), dim=(1, 2)) for p in grouped.parameters()]
    stats = torch.stack([losses.detach().float(), *norms]).cpu()  # (1 + 2M, K), the one sync
    if bool(torch.isfinite(stats).all()):
        return stats[0].tolist()
    for run in range(grouped.k):
        if not math.isfinite(float(stats[0, run])):
            raise NonFiniteRunError(f"step {step}: run {run} has non-finite training loss {float(stats[0, run])}")
    for j, p in enumerate(grouped.parameters()):
        for run in range(grouped.k):
            if not math.isfinite(float(stats[1 + j, run])):
                name, which = grouped.names[j // 2], "AB"[j % 2]
                if not bool(torch.isfinite(p.grad[run]).all()):
                    raise NonFiniteRunError(f"step {step}: run {run}, module {name}: non-finite lora_{which} gradient")
                raise NonFiniteRunError(f"step {step}: run {run}, module {name}: lora_{which} gradient norm "
                                        "overflowed float32; every element is finite but the step has blown up")
    raise AssertionError("unreachable: a non-finite statistic was not located")


def train_step(
    grouped: GroupedLora, model: nn.Module, opt: torch.optim.Optimizer, batch: Batch, step: int,
    precision: Precision | None = None, edit: GradEdit | None = None, tlm: TracedLM | None = None,
    checkpointing: str = "none",
) -> list[float]:
    """One AdamW update of all K runs; returns each run's loss (its own ``batch_loss``) before the update.

    ``batch`` holds K row blocks of equal size (block k: run k's examples under run k's
    system prompt). The base must be frozen; ``opt`` must optimise ``grouped.parameters()``.
    The base runs in training mode for the step and gets its previous mode back afterwards.
    ``precision`` is the training precision policy (autocast, TF32), as for one run
    (:func:`nnsight_inoc.train.lora.train_step`); None = the tensors' own precision.
    ``edit`` (K run blocks, identity for runs without an intervention) applies the runs' gradient
    interventions in the backward pass, each on its own row block, through the nnsight trace of ``tlm``
    (which must wrap ``model``).
    ``checkpointing`` (:data:`nnsight_inoc.models.checkpointing.LEVELS`) recomputes the decoder layers' MLP
    (and attention) blocks in the backward pass instead of keeping their activations: the same numbers,
    less memory; the model's modules are restored after the step.
    Raises :class:`NonFiniteRunError` naming the run and module on any NaN/inf.
    """
    n = int(batch.input_ids.shape[0])
    if n % grouped.k:
        raise ValueError(f"{n} rows cannot be split into {grouped.k} equal run blocks")
    if edit is not None and (edit.k != grouped.k or tlm is None or tlm.hf_model is not model):
        raise ValueError("an intervened grouped step needs one edit block per run and the TracedLM wrapping the model")
    was_training = model.training  # the base is shared with other stages: give its mode back
    model.train()
    try:
        opt.zero_grad(set_to_none=True)
        device = grouped.A[0].device
        batch = batch.to(device)  # step batches are built on the host (as train.lora.train_step takes them)
        matmul = precision.matmul_precision(device) if precision else contextlib.nullcontext()
        # The backward runs with the LoRA hooks attached: a checkpointed block's recomputation calls them again.
        with matmul, activation_checkpointing(model, checkpointing), grouped.attached(model, n // grouped.k):
            with precision.autocast(device) if precision else contextlib.nullcontext():
                if edit is None:
                    losses = grouped_loss(model, batch, grouped.k)
                else:
                    assert tlm is not None
                    losses = intervened_step_losses(tlm, batch, edit)
            if edit is None:
                losses.sum().backward()
        out = check_step(grouped, losses, step)
        opt.step()
        opt.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return out
