"""Activation checkpointing inside the decoder layers, switched on for one step and removed after it.

What a training step keeps for its backward pass is dominated by activations inside each decoder
layer: the MLP block's four (tokens x d_mlp) intermediates and the attention block's projections
(``perf/step_memory.py`` measures them; ``results/bench/step_memory_cpu.md``). Checkpointing a block
keeps only its inputs and recomputes the rest during the backward pass (``torch.utils.checkpoint``,
``use_reentrant=False``), so the step computes the same numbers (pinned in
``tests/models/test_checkpointing.py`` and the grouped and intervened tests) with less memory and one
more forward of the checkpointed blocks.

Levels (``[execution] activation_checkpointing``):

* ``"none"``: nothing changes.
* ``"mlp"``: each decoder layer's ``mlp`` block (gate/up/down projections and their LoRA updates).
* ``"attn_mlp"``: the ``mlp`` and the ``self_attn`` block of each layer (q/k/v/o projections, RoPE,
  scaled-dot-product attention). The norms, the residual adds and the decoder layer's own output (the
  residual stream an nnsight trace reads and edits the gradient of) stay outside every checkpointed
  region: recomputation never re-runs a decoder layer, only blocks nested in it. Re-running a block
  re-runs the forward hooks of its modules (grouped LoRA's updates: pure functions of the parameters)
  and, under an nnsight trace, passes its modules' locations a second time, which no trace of this
  package reads.

The blocks are wrapped by replacing the instance attribute ``forward`` of each ``mlp`` / ``self_attn``
module (where nnsight keeps its controller) with a wrapper that calls the previous ``forward``, and
every slot is put back in ``finally``. Wrap a model with nnsight before entering, never inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

Level = Literal["none", "mlp", "attn_mlp"]
LEVELS: tuple[str, ...] = get_args(Level)
BLOCKS: dict[str, tuple[str, ...]] = {"none": (), "mlp": ("mlp",), "attn_mlp": ("self_attn", "mlp")}
_MISSING = object()
_CACHE_KEYS = ("cache", "past_key_values", "past_key_value")


class Checkpointed:
    """A block's ``forward`` run under ``torch.utils.checkpoint`` (non-reentrant) when autograd records.

    ``inner`` is the previous ``forward`` (bound, or nnsight's controller). Without grad mode (reads,
    generation) it is called as is. A KV cache passed with grad on is refused (ValueError): the
    recomputation would append the keys and values to it a second time.
    """

    def __init__(self, inner: Callable[..., Any], name: str) -> None:
        self.inner = inner
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.inner(*args, **kwargs)
        if any(kwargs.get(k) is not None for k in _CACHE_KEYS):
            raise ValueError(f"{self.name}: activation checkpointing got a KV cache in a forward with autograd on; "
                             "call the model with use_cache=False")
        return checkpoint(self.inner, *args, use_reentrant=False, **kwargs)


def checkpointed_blocks(model: nn.Module, level: str) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs ``level`` checkpoints: each decoder layer's ``self_attn`` / ``mlp``, in order.

    Decoder layers are the entries of the unique ``nn.ModuleList`` named ``layers``. Raises ValueError for an
    unknown level, and for a model whose layers lack a block the level names (never a silent no-op).
    """
    if level not in BLOCKS:
        raise ValueError(f"activation_checkpointing must be one of {list(LEVELS)}, got {level!r}")
    if not BLOCKS[level]:
        return []
    lists = [(n, m) for n, m in model.named_modules() if n.split(".")[-1] == "layers" and isinstance(m, nn.ModuleList)]
    if len(lists) != 1:
        raise ValueError(f"activation checkpointing needs exactly one decoder ModuleList named 'layers', found "
                         f"{[n for n, _ in lists] or 'none'}")
    prefix, layers = lists[0]
    out = []
    for i, layer in enumerate(layers):
        for block in BLOCKS[level]:
            mod = getattr(layer, block, None)
            if not isinstance(mod, nn.Module):
                raise ValueError(f"{prefix}.{i} has no '{block}' module to checkpoint (level {level!r})")
            out.append((f"{prefix}.{i}.{block}", mod))
    return out


@contextlib.contextmanager
def activation_checkpointing(model: nn.Module, level: str) -> Iterator[list[str]]:
    """Inside the context, ``level``'s blocks of ``model`` recompute their activations in the backward pass.

    Yields the names of the wrapped blocks ([] for ``"none"``). Every ``forward`` slot is restored in
    ``finally`` (the instance attribute put back, or removed where there was none), so the model is
    exactly as before. A graph recorded inside recomputes through the forward it captured, so its backward
    pass may run after leaving; but the recomputation calls the blocks' modules again, hooks included, so
    every forward hook that changed the forward (grouped LoRA's ``attached``) must still be there when the
    backward runs (when one is missing, torch's recomputation check raises ``CheckpointError`` if the saved
    tensors differ in number or shape). Nesting is refused (RuntimeError): it would checkpoint
    twice. ValueError for an unknown level or a model without the blocks.
    """
    blocks = checkpointed_blocks(model, level)
    if any(isinstance(m.__dict__.get("forward"), Checkpointed) for _, m in blocks):
        raise RuntimeError("activation checkpointing is already on for this model; leave that context first")
    done: list[tuple[nn.Module, Any]] = []
    try:
        for name, mod in blocks:
            prev = mod.__dict__.get("forward", _MISSING)
            mod.__dict__["forward"] = Checkpointed(mod.forward, name)
            done.append((mod, prev))
        yield [n for n, _ in blocks]
    finally:
        for mod, prev in reversed(done):
            if prev is _MISSING:
                del mod.__dict__["forward"]
            else:
                mod.__dict__["forward"] = prev
