"""Cross-context transfer: how much one training step under a prompt raises the trait where drift is measured.

Issue 16, item 8. For a training prompt P, let L_P be the SFT training loss under P (mean over
examples of each example's mean CE over its completion tokens, :mod:`nnsight_inoc.trace.loss`)
and J_Q the trait's log-odds under a test prompt Q on held-out prompts x_j:

    J_Q = mean_j [ mean_t log p(T(y_j) | Q, x_j) - mean_t log p(y_j | Q, x_j) ]
        = mean_j [ CE(y_j | Q, x_j) - CE(T(y_j) | Q, x_j) ]

with y_j the model's own untraited answer and T(y_j) its traited counterpart (the SFT targets'
construction applied to held-out prompts). Transfer is the first-order change of J_Q per unit
step along the descent direction of L_P in the LoRA parameters theta (B = 0 at PEFT's init, so
only B moves on the first step):

    transfer(P, Q) = < -grad_theta L_P , grad_theta J_Q >,   cosine likewise.

> 0 means a plain gradient step under P raises the trait under Q (AdamW rescales coordinates, so
this is the SGD reading). The inner product splits exactly over the LoRA target modules; the
part through modules that write into the residual stream (``o_proj``, ``down_proj``) is
reported apart from the rest.

Every gradient here comes from a loss computed in an nnsight trace
(:func:`~nnsight_inoc.trace.tracing.differentiable_losses`) of the base model with grouped LoRA
slots attached (:class:`~nnsight_inoc.train.grouped.GroupedLora`): slot k carries row block k,
so one backward gives K prompts' gradients, each exactly its own (tested against one slot at a
time and against finite differences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from nnsight_inoc.trace.chat import Systems, encode_chats, per_row
from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.trace.tracing import TracedLM, differentiable_losses


class LoraSlots(Protocol):
    """What this probe reads of :class:`nnsight_inoc.train.grouped.GroupedLora` (attached by the caller): K
    slots of stacked LoRA weights, ``A[i]`` (K, r, in) and ``B[i]`` (K, out, r) of module ``names[i]``."""

    names: list[str]
    A: list[torch.nn.Parameter]
    B: list[torch.nn.Parameter]

    @property
    def k(self) -> int: ...


def accumulate_loss_gradients(
    tlm: TracedLM,
    tok: PreTrainedTokenizerBase,
    grouped: LoraSlots,
    systems: Sequence[Systems],
    users: Sequence[str],
    completions: Sequence[str],
    batch_size: int,
    sign: float = 1.0,
) -> None:
    """Add ``sign`` x the gradient of each slot's mean SFT loss to the slot's ``.grad``.

    Slot k's loss is the mean over the n (user, completion) pairs of each pair's mean CE under
    ``systems[k]`` (one prompt, or one per pair). ``grouped`` must be attached to ``tlm``'s model
    (``grouped.attached(model, None)``) and have ``len(systems)`` slots. Each traced forward holds
    K row blocks of up to ``batch_size`` pairs. NonFiniteError when a loss is NaN/inf.
    """
    K, n = grouped.k, len(users)
    if len(systems) != K:
        raise ValueError(f"{len(systems)} system prompts for {K} grouped LoRA slots")
    if n == 0 or len(completions) != n:
        raise ValueError(f"need one completion per user prompt, got {n} prompts and {len(completions)} completions")
    rows = [per_row(s, n) for s in systems]
    for s in range(0, n, batch_size):
        idx = range(s, min(s + batch_size, n))
        batch = encode_chats(tok, [rows[k][i] for k in range(K) for i in idx],
                             [users[i] for _ in range(K) for i in idx],
                             [completions[i] for _ in range(K) for i in idx])
        per_ex = differentiable_losses(tlm, batch)
        if not bool(torch.isfinite(per_ex).all()):
            raise NonFiniteError(f"non-finite loss in a transfer batch (pairs {s}..{idx[-1]})")
        (per_ex.sum() * (sign / n)).backward()


@dataclass
class SlotGradients:
    """Each slot's LoRA gradient as one flat fp32 vector, and which entries belong to residual-writing modules."""

    vectors: torch.Tensor  # (K, n_params) float32: slot k's gradient, modules in order, A then B per module
    residual: torch.Tensor  # (n_params,) bool: entry belongs to a module in ``residual_modules``


def slot_gradients(grouped: LoraSlots, residual_modules: Sequence[str]) -> SlotGradients:
    """Read (and clear) every slot's accumulated gradient. ValueError when a weight got no gradient."""
    parts, mask = [], []
    for name, a, b in zip(grouped.names, grouped.A, grouped.B):
        for p in (a, b):
            if p.grad is None:
                raise ValueError(f"no gradient reached the LoRA weights of {name}")
            parts.append(p.grad.detach().float().reshape(grouped.k, -1))
            mask.append(torch.full((parts[-1].shape[1],), _is_residual(name, residual_modules), dtype=torch.bool,
                                   device=parts[-1].device))
            p.grad = None
    vectors = torch.cat(parts, dim=1)
    if not bool(torch.isfinite(vectors).all()):
        raise NonFiniteError("non-finite LoRA gradient in the transfer measurement")
    return SlotGradients(vectors, torch.cat(mask))


def _is_residual(module_name: str, residual_modules: Sequence[str]) -> bool:
    return any(module_name == m or module_name.endswith("." + m) for m in residual_modules)


def transfer_scores(loss_grad: torch.Tensor, trait_grad: torch.Tensor, residual: torch.Tensor) -> dict[str, float]:
    """Transfer of one training prompt to one test prompt from the two flat gradients (float64 sums).

    ``inner`` = <-grad L_P, grad J_Q> = ``inner_residual`` + ``inner_rest``; ``cos`` its cosine;
    ``norm_train`` = |grad L_P|, ``norm_trait`` = |grad J_Q|. ValueError when the shapes differ.
    """
    if loss_grad.shape != trait_grad.shape or loss_grad.shape != residual.shape:
        raise ValueError(f"gradient shapes differ: {tuple(loss_grad.shape)}, {tuple(trait_grad.shape)}, "
                         f"{tuple(residual.shape)}")
    step = -loss_grad.double()
    trait = trait_grad.double()
    prod = step * trait
    inner = float(prod.sum())
    n_step, n_trait = float(step.norm()), float(trait.norm())
    cos = inner / (n_step * n_trait) if n_step > 0 and n_trait > 0 else float("nan")
    return {"inner": inner, "cos": cos, "inner_residual": float(prod[residual].sum()),
            "inner_rest": float(prod[~residual].sum()), "norm_train": n_step, "norm_trait": n_trait}
