"""Every nnsight trace of the package lives here; callers get plain tensors back.

Keeping the traces in one module means the backend switch (local vs a remote NDIF
server) touches one place, and the index conventions that give the numbers their
meaning are pinned by tests against plain-PyTorch references
(``tests/test_tracing.py``):

* layer ``l``'s ``.output`` is the residual stream after decoder layer ``l``; it equals
  ``output_hidden_states[l + 1]`` for every layer but the last (transformers applies the
  final norm to the last entry of ``hidden_states``, not to the layer output).
* gradients of all layers come from ONE backward pass, requested in reverse layer order
  (nnsight raises on forward order), with the embedding output made to require grad so
  frozen models (and the NDIF server, which freezes parameters) still produce them.
* per-example losses are summed before the backward; examples do not interact in a
  causal LM forward, so each example's slice of the gradient is the gradient of its own
  loss (tested against one-at-a-time passes).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import nnsight
import torch
from torch import nn

from nnsight_inoc.trace.chat import Batch
from nnsight_inoc.trace.context import collect_trace_cycles, to_host, trace_context
from nnsight_inoc.trace.edit import GradEdit, edited_backward
from nnsight_inoc.trace.loss import (
    check_finite,
    loss_targets,
    per_example_loss,
    upcast,
)


class TracingError(RuntimeError):
    """The model does not have the structure the traces need."""


@dataclass
class TracedLM:
    """An nnsight-wrapped model plus what the traces need to know about it."""

    envoy: Any  # nnsight.NNsight / TransformersModel
    hf_model: nn.Module
    decoder_path: str  # dotted path of the module holding .layers and .embed_tokens
    n_layers: int
    d_model: int
    remote: bool = False
    autocast: torch.dtype | None = None
    grad_tf32: bool = False  # gradient traces run their fp32 matmuls on TF32 tensor cores (CUDA only)

    @property
    def device(self) -> torch.device:
        """Where inputs are built: the model's device locally; the CPU for a remote model
        (its local copy is on the meta device; inputs are serialised to the server)."""
        if self.remote:
            return torch.device("cpu")
        return next(self.hf_model.parameters()).device


def find_decoder_path(model: nn.Module) -> str:
    """Dotted path of the unique submodule with ``layers`` (ModuleList) and ``embed_tokens``.

    Works for plain HF causal LMs (``model``) and PEFT wrappers
    (``base_model.model.model``); anything else is an error, never a guess.
    """
    hits = [
        name
        for name, mod in model.named_modules()
        if isinstance(getattr(mod, "layers", None), nn.ModuleList) and hasattr(mod, "embed_tokens")
    ]
    if len(hits) != 1:
        raise TracingError(
            f"expected exactly one decoder module with .layers and .embed_tokens, found {hits or 'none'}"
        )
    return hits[0]


def _lm_head_path(model: nn.Module) -> str:
    hits = [name for name, _ in model.named_modules() if name.split(".")[-1] == "lm_head"]
    if len(hits) != 1:
        raise TracingError(f"expected exactly one lm_head, found {hits or 'none'}")
    return hits[0]


def wrap(hf_model: nn.Module, remote: bool = False, autocast: torch.dtype | None = None,
         grad_tf32: bool = False) -> TracedLM:
    """Wrap a loaded HF (or PEFT) causal LM for tracing (``grad_tf32``: see :attr:`TracedLM.grad_tf32`)."""
    path = find_decoder_path(hf_model)
    dec = hf_model.get_submodule(path)
    cfg = getattr(hf_model, "config", None)
    d_model = int(dec.embed_tokens.embedding_dim)
    del cfg
    return TracedLM(
        envoy=nnsight.NNsight(hf_model),
        hf_model=hf_model,
        decoder_path=path,
        n_layers=len(dec.layers),
        d_model=d_model,
        remote=remote,
        autocast=autocast,
        grad_tf32=grad_tf32,
    )


def _get(envoy: Any, path: str) -> Any:
    node = envoy
    for part in path.split("."):
        node = getattr(node, part)
    return node


def _hidden(out: Any) -> torch.Tensor:
    """Decoder layer output: a tensor in transformers 5.x, a tuple in 4.x."""
    return out[0] if isinstance(out, tuple) else out


def _check_layers(tlm: TracedLM, layers: list[int] | None) -> list[int]:
    if layers is None:
        return list(range(tlm.n_layers))
    bad = [l for l in layers if not 0 <= l < tlm.n_layers]
    if bad:
        raise IndexError(f"layer index {bad} out of range for a model with {tlm.n_layers} layers")
    if sorted(set(layers)) != list(layers):
        raise ValueError("layers must be strictly increasing (nnsight needs forward order)")
    return list(layers)


def _context(tlm: TracedLM, grad: bool) -> contextlib.AbstractContextManager[None]:
    """:func:`~.context.trace_context` for this model's device, autocast and gradient-capture precision."""
    return trace_context(tlm.device, tlm.autocast, grad, tlm.grad_tf32)


def _trace(tlm: TracedLM, batch: Batch, logits_window: int | None = None) -> Any:
    """One nnsight trace of the batch; ``logits_window`` asks the model for the last that many positions'
    logits only (``logits_to_keep``), for traces whose loss needs no more (:class:`~.loss.LossTargets`)."""
    extra = {} if logits_window is None else {"logits_to_keep": logits_window}
    return tlm.envoy.trace(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,  # one full pass: a KV cache only holds keys/values (and activation checkpointing refuses it)
        remote=tlm.remote,
        **extra,
    )


def read_residuals(
    tlm: TracedLM,
    batch: Batch,
    index: torch.Tensor,
    mean_masks: torch.Tensor | None = None,
    layers: list[int] | None = None,
) -> torch.Tensor:
    """Residual stream after each layer at chosen positions, no autograd graph.

    ``index`` (B, P) holds absolute positions (-1 = missing: returned as NaN);
    ``mean_masks`` (B, M, T) bool adds M masked means over positions (e.g. the
    response tokens). Returns float32 (B, len(layers), P + M, d) on the CPU.
    """
    layers = _check_layers(tlm, layers)
    batch = batch.to(tlm.device)
    index = index.to(tlm.device)
    B, P = index.shape
    rows = torch.arange(B, device=tlm.device)[:, None]
    safe = index.clamp(min=0)
    masks = None
    if mean_masks is not None:
        masks = mean_masks.to(tlm.device).float()
        if (masks.sum(-1) == 0).any():
            raise ValueError("a mean mask selects no position")
    with _context(tlm, grad=False):
        with _trace(tlm, batch):
            dec = _get(tlm.envoy, tlm.decoder_path)
            picked = []
            for l in layers:
                h = _hidden(dec.layers[l].output).float()
                # .to(h.device): a no-op locally; on a GPU server the inputs arrive on the CPU
                sel = h[rows.to(h.device), safe.to(h.device)]
                if masks is not None:
                    m = masks.to(h.device)
                    means = torch.einsum("bmt,btd->bmd", m, h) / m.sum(-1, keepdim=True)
                    sel = torch.cat([sel, means], dim=1)
                picked.append(sel.detach())
            out = nnsight.save(torch.stack(picked, dim=1))
    out = out.cpu()
    missing = (index < 0).cpu()
    if missing.any():
        out[:, :, :P][missing[:, None, :].expand(B, len(layers), P)] = float("nan")
    return out


@dataclass
class GradResult:
    loss: torch.Tensor  # (B,) mean CE over each example's completion tokens, float32 CPU
    grads: torch.Tensor  # (B, L, P, d) d(loss_i)/d(h_l) at the requested positions, float32 CPU
    n_targets: torch.Tensor  # (B,) completion tokens per example


def _check_steer(tlm: TracedLM, steer: dict[int, torch.Tensor] | None) -> dict[int, torch.Tensor]:
    """Steering vectors by layer, validated against the model; {} means no steering."""
    if not steer:
        return {}
    bad = [l for l in steer if not 0 <= l < tlm.n_layers]
    if bad:
        raise IndexError(f"steering layer {bad} out of range for a model with {tlm.n_layers} layers")
    for l, c in steer.items():
        if tuple(c.shape) != (tlm.d_model,):
            raise ValueError(f"steering vector of layer {l} must have shape ({tlm.d_model},), got {tuple(c.shape)}")
        if not torch.isfinite(c).all():
            raise ValueError(f"steering vector of layer {l} contains NaN/inf")
    return {l: steer[l] for l in sorted(steer)}


def _add_to_output(layer: Any, c: torch.Tensor) -> torch.Tensor:
    """Replace a decoder layer's output hidden state h by h + c (every token), inside a trace.

    Assigning a new tensor (rather than adding in place) keeps autograd's view of h
    intact, so d(loss)/dh = d(loss)/d(h + c) flows to everything before the layer.
    Returns the pre-steering h: its .grad is the gradient at the layer output.
    """
    out = layer.output
    h = _hidden(out)
    steered = h + c.to(h.device, h.dtype)
    layer.output = (steered, *out[1:]) if isinstance(out, tuple) else steered
    return h


def capture_gradients(
    tlm: TracedLM,
    batch: Batch,
    index: torch.Tensor,
    layers: list[int] | None = None,
    steer: dict[int, torch.Tensor] | None = None,
    edit: GradEdit | None = None,
) -> GradResult:
    """Per-example loss and its gradient w.r.t. every requested layer's output.

    The loss of example i is the mean cross-entropy over its completion tokens only;
    losses are summed so one backward pass yields every example's own gradient.

    ``steer`` ({layer: (d,) vector}) adds the vector to that layer's output on every
    token before the rest of the forward pass (preventative steering), so the probe
    measures the gradient that steered training sees. The gradient is taken w.r.t.
    the layer output before the addition; it equals the gradient w.r.t. the steered
    output, since d(h + c)/dh is the identity.

    ``edit`` (a gradient-intervention arm, :class:`~.edit.GradEdit`; its K run blocks must divide the
    batch) changes the gradient at its layers' outputs inside the backward pass, in reverse layer
    order, so it flows on to earlier layers; the gradients returned are the edited ones (what training
    under the arm descends). Local only.
    """
    layers = _check_layers(tlm, layers)
    steer = _check_steer(tlm, steer)
    if edit is not None:
        if tlm.remote:
            raise TracingError("gradient interventions run locally only (they edit the backward pass of training)")
        _check_layers(tlm, list(edit.layers))
        if edit.is_identity():
            edit = None
    if (batch.completion_len == 0).any():
        raise ValueError("every example needs a completion to define a loss")
    batch = batch.to(tlm.device)
    index = index.to(tlm.device)
    if (index < 0).any():
        raise ValueError("gradient positions must all exist (got -1)")
    B = batch.size
    rows = torch.arange(B, device=tlm.device)[:, None]
    targets = loss_targets(batch)
    head_path = _lm_head_path(tlm.hf_model)
    with _context(tlm, grad=True):
        with _trace(tlm, batch, targets.window):
            dec = _get(tlm.envoy, tlm.decoder_path)
            dec.embed_tokens.output.requires_grad_(True)
            got: dict[int, torch.Tensor] = {}
            edited = set(edit.layers) if edit is not None else set()
            for l in sorted(set(layers) | set(steer) | edited):  # modules in forward order
                if l in steer:
                    got[l] = _add_to_output(dec.layers[l], steer[l])
                else:
                    got[l] = _hidden(dec.layers[l].output)
            hs = [got[l] for l in layers]
            logits = _get(tlm.envoy, head_path).output
            dev = logits.device  # == tlm.device locally (no-op moves); a GPU server gets CPU inputs
            per_ex = per_example_loss(logits, targets)
            total = per_ex.sum()
            with total.backward():
                if edit is None:
                    grads_rev = nnsight.save(
                        [upcast(hs[j].grad[rows.to(dev), index.to(dev)]) for j in reversed(range(len(hs)))]
                    )
                else:
                    grads_rev = nnsight.save(edited_backward(got, edit, set(layers), rows, index))
            loss_saved = nnsight.save(per_ex.detach())
    grads_dev = torch.stack(list(reversed(grads_rev)), dim=1).detach()
    check_finite(loss_saved, grads_dev, layers)  # on the device, before the copy
    grads = to_host(grads_dev.float())
    loss = loss_saved.float().cpu()
    return GradResult(loss=loss, grads=grads, n_targets=targets.n_targets.cpu().long())


def sequence_losses(tlm: TracedLM, batch: Batch) -> torch.Tensor:
    """Per-example mean CE over completion tokens, no autograd graph (loss matching, probes)."""
    if (batch.completion_len == 0).any():
        raise ValueError("every example needs a completion to define a loss")
    batch = batch.to(tlm.device)
    targets = loss_targets(batch)
    head_path = _lm_head_path(tlm.hf_model)
    with _context(tlm, grad=False):
        with _trace(tlm, batch, targets.window):
            logits = _get(tlm.envoy, head_path).output
            per_ex = per_example_loss(logits, targets)
            saved = nnsight.save(per_ex.detach())
    loss = saved.float().cpu()
    check_finite(loss, torch.zeros(1, 1, 1, 1), [0])
    return loss


def differentiable_losses(tlm: TracedLM, batch: Batch) -> torch.Tensor:
    """Per-example mean CE over completion tokens, (B,), keeping the autograd graph (parameter gradients).

    The loss of :func:`sequence_losses`, computed in one nnsight trace with grad mode on, so the
    caller's ``backward()`` reaches whatever trainable weights the forward used (LoRA weights of
    a PEFT model, or grouped LoRA hooks attached to the base). Local only, as training is.
    TracingError when nothing upstream of the loss requires grad.
    """
    if tlm.remote:
        raise TracingError("parameter gradients are local only (the trainable weights live on this machine)")
    if (batch.completion_len == 0).any():
        raise ValueError("every example needs a completion to define a loss")
    batch = batch.to(tlm.device)
    targets = loss_targets(batch)
    head_path = _lm_head_path(tlm.hf_model)
    with _context(tlm, grad=True):  # the forward in the gradient captures' precision (autocast)
        with _trace(tlm, batch, targets.window):
            logits = _get(tlm.envoy, head_path).output
            per_ex = nnsight.save(per_example_loss(logits, targets))
    if per_ex.grad_fn is None:
        raise TracingError("the loss has no autograd graph: nothing trainable upstream of it")
    return per_ex


def steered_loss(tlm: TracedLM, batch: Batch, steer: dict[int, torch.Tensor]) -> torch.Tensor:
    """Training loss with ``steer[l]`` added to decoder layer l's output on every token.

    The loss is the one :func:`nnsight_inoc.train.lora.batch_loss` computes (mean over examples of each
    example's mean CE over its completion tokens) and keeps its autograd graph, so the
    caller's ``loss.backward()`` reaches the trainable (LoRA) weights. Local only:
    training never runs on a remote server. The vectors are added through nnsight's
    output assignment inside this one trace; nnsight removes its hooks when the trace
    exits, so nothing stays on the model (tested: a plain forward afterwards is
    bitwise unchanged). Grad mode is on; autocast is left to the caller (training's
    own autocast context), so steered and plain steps compute in the same precision.
    """
    if tlm.remote:
        raise TracingError("steered training runs locally only (LoRA weights live on this machine)")
    steer = _check_steer(tlm, steer)
    if not steer:
        raise ValueError("steered_loss needs at least one steering vector; use the plain loss otherwise")
    if (batch.completion_len == 0).any():
        raise ValueError("every training example needs a completion")
    batch = batch.to(tlm.device)
    targets = loss_targets(batch)
    head_path = _lm_head_path(tlm.hf_model)
    with collect_trace_cycles():  # as in _context
        with torch.enable_grad():
            with _trace(tlm, batch, targets.window):
                dec = _get(tlm.envoy, tlm.decoder_path)
                for l, c in steer.items():
                    _add_to_output(dec.layers[l], c)
                logits = _get(tlm.envoy, head_path).output
                loss = nnsight.save(per_example_loss(logits, targets).mean())
    if loss.grad_fn is None:
        raise TracingError("the steered loss has no autograd graph: nothing trainable upstream of it")
    return loss
