"""The per-example SFT loss, defined once for traces, training and probes, and the finiteness check.

Loss of example i = mean cross-entropy over its completion tokens (the end-of-turn token
included): logits at position t predict token t + 1, counted where ``Batch.target_mask`` is
set. Every trace (gradient capture, sequence losses, steered training) and the plain
training step use these helpers, so the alignment measured before training and the loss
that training descends are the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nnsight_inoc.trace.chat import Batch


class NonFiniteError(FloatingPointError):
    """A loss or gradient came out NaN/inf; never averaged away."""


def upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16/fp16 logits and grads), keeping float64 for reference runs."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclass
class LossTargets:
    """What the completion-only loss needs, for logits of the last ``window`` positions only.

    Only positions that predict a completion token need logits. With left padding (how every
    batch here is built) those are the last positions of each row, so the model is asked for
    the logits of the last ``window`` positions (``logits_to_keep=window``, the Hugging Face
    forward's own argument) instead of all T: the LM head's (rows x positions x vocabulary)
    output, most of a step's activation memory at a 150k vocabulary, shrinks to what the loss
    reads. The loss itself is unchanged (the same logits at the same positions).
    """

    window: int  # logits are computed for positions T - window .. T - 1
    mask: torch.Tensor  # (B, window) bool: the logit at that position predicts a completion token
    rows: torch.Tensor  # (n_targets,) row of each target
    labels: torch.Tensor  # (n_targets,) the token each target logit must predict
    n_targets: torch.Tensor  # (B,) float: completion tokens per row (incl. end of turn)


def loss_targets(batch: Batch) -> LossTargets:
    """Completion-only CE targets of a batch, on the smallest window of final positions that holds them all.

    ValueError when a row has no completion (no loss is defined for it).
    """
    tmask = batch.target_mask
    if not bool(tmask.any(-1).all()):
        raise ValueError("every example needs a completion to define a loss")
    T = tmask.shape[1]
    first = int(tmask.float().argmax(-1).min())  # the earliest predicting position over the rows
    window = T - first
    labels = torch.roll(batch.input_ids, shifts=-1, dims=1)
    return LossTargets(window=window, mask=tmask[:, first:], rows=torch.nonzero(tmask, as_tuple=True)[0],
                       labels=labels[tmask], n_targets=tmask.sum(-1).float())


def per_example_loss(logits: torch.Tensor, targets: LossTargets) -> torch.Tensor:
    """Each example's mean CE over its completion tokens, (B,), from logits of the last ``targets.window``
    positions (B, window, V); also inside a trace.

    The targets are moved to the logits' device: a no-op locally; a remote server gets them as CPU tensors.
    """
    if logits.shape[1] != targets.window:
        raise ValueError(f"logits cover {logits.shape[1]} positions, the loss needs the last {targets.window}")
    tmask, tgt_rows, tgt_labels, n_tgt = targets.mask, targets.rows, targets.labels, targets.n_targets
    dev = logits.device
    tok_loss = torch.nn.functional.cross_entropy(upcast(logits[tmask.to(dev)]), tgt_labels.to(dev), reduction="none")
    return torch.zeros(n_tgt.shape[0], device=dev, dtype=tok_loss.dtype).index_add(
        0, tgt_rows.to(dev), tok_loss
    ) / n_tgt.to(dev, tok_loss.dtype)


def check_finite(loss: torch.Tensor, grads: torch.Tensor, layers: list[int]) -> None:
    """Raise NonFiniteError naming the first bad row and layer.

    Why one reduction first: on the tensors' own device it costs one small kernel and one
    sync; the H100 profile spent 0.09 s per trace in a CPU ``isfinite`` over the copied
    gradients (64 intra-op threads sharing the host with other workers). The per-row detail
    is worked out only when something is bad.
    """
    if bool(torch.isfinite(loss).all() & torch.isfinite(grads).all()):
        return
    loss, grads = loss.cpu(), grads.cpu()
    bad_loss = (~torch.isfinite(loss)).nonzero().flatten().tolist()
    if bad_loss:
        raise NonFiniteError(f"non-finite loss for batch rows {bad_loss}")
    bad = (~torch.isfinite(grads)).any(dim=(2, 3)).nonzero().tolist()
    if bad:
        row, j = bad[0]
        raise NonFiniteError(
            f"non-finite gradient at batch row {row}, layer {layers[j]} ({len(bad)} row-layer pairs affected)"
        )
