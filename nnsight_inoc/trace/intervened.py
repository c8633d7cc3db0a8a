"""The training step's trace under a gradient intervention: forward, loss and the edited backward pass in one trace.

A gradient-intervention arm (:mod:`nnsight_inoc.measures.intervention`) must change the gradient
*while* it flows backward, so the backward pass runs inside the nnsight trace of the step: the
layer outputs are taken in forward order, the loss is computed from the traced logits, and inside
``with loss.backward():`` each edited layer's ``.grad`` is replaced in reverse layer order
(:func:`~.edit.edited_backward`). The change flows on to earlier layers and to the trainable
(LoRA) weights, whose ``.grad`` holds the result when this returns; the caller takes the optimiser
step. The forward pass and the loss are those of the plain step (tested against a plain-PyTorch
``tensor.register_hook`` reference in ``tests/trace/test_intervened.py``).
"""

from __future__ import annotations

import nnsight
import torch

from nnsight_inoc.trace.chat import Batch
from nnsight_inoc.trace.context import collect_trace_cycles
from nnsight_inoc.trace.edit import GradEdit, edited_backward
from nnsight_inoc.trace.loss import loss_targets, per_example_loss
from nnsight_inoc.trace.tracing import (
    TracedLM,
    TracingError,
    _add_to_output,
    _check_layers,
    _check_steer,
    _get,
    _hidden,
    _lm_head_path,
    _trace,
)


def intervened_step_losses(tlm: TracedLM, batch: Batch, edit: GradEdit,
                           steer: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Run one training step's forward AND backward with ``edit`` applied; the runs' losses, (K,) detached.

    ``batch`` holds K = ``edit.k`` equal row blocks (block k: run k's examples); run k's loss is the mean
    over its rows of each row's mean CE over its completion tokens (:func:`~.loss.per_example_loss`, as
    :func:`nnsight_inoc.train.lora.batch_loss` and the grouped loss define it), and the backward pass is
    that of their sum, so each run's trainable weights get their own run's gradient. ``steer``
    ({layer: (d,) vector}) adds preventative steering in the same trace. Gradients accumulate into
    whatever requires grad (call ``zero_grad`` first). Grad mode is on; autocast and matmul precision are
    the caller's (the backward runs inside the same contexts as the forward). Local only.
    """
    if tlm.remote:
        raise TracingError("gradient interventions run locally only (training never runs on a remote server)")
    steer = _check_steer(tlm, steer)
    _check_layers(tlm, list(edit.layers))
    n = int(batch.input_ids.shape[0])
    if n % edit.k:
        raise ValueError(f"{n} rows cannot be split into {edit.k} equal run blocks")
    if (batch.completion_len == 0).any():
        raise ValueError("every training example needs a completion")
    batch = batch.to(tlm.device)
    targets = loss_targets(batch)
    head_path = _lm_head_path(tlm.hf_model)
    with collect_trace_cycles(), torch.enable_grad():
        with _trace(tlm, batch, targets.window):
            dec = _get(tlm.envoy, tlm.decoder_path)
            got: dict[int, torch.Tensor] = {}
            for l in sorted(set(edit.layers) | set(steer)):  # modules in forward order
                got[l] = _add_to_output(dec.layers[l], steer[l]) if l in steer else _hidden(dec.layers[l].output)
            logits = _get(tlm.envoy, head_path).output
            losses = per_example_loss(logits, targets).reshape(edit.k, n // edit.k).mean(1)
            total = losses.sum()
            with total.backward():
                edited_backward(got, edit, set())
            saved = nnsight.save(losses.detach())
    return saved
