"""What surrounds every trace: grad mode, autocast and matmul precision, freeing the trace's cycles, host copies.

Kept apart from :mod:`.tracing` (the traces themselves) so each stays short; only the traces use it.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

import torch


@contextlib.contextmanager
def collect_trace_cycles() -> Iterator[None]:
    """Free the reference cycles one trace leaves behind, scanning only that trace's objects.

    Why a collection at all: nnsight 0.8.1's ``with loss.backward():`` tracer never
    cancels its Interleaver, so the Interleaver and its Mediator keep each other alive,
    and the Mediator's scope holds every name of the trace body (every layer output,
    the logits). Refcounting never frees that; Python's generational collector reaches
    it only at a full collection, which in a process holding a model comes after many
    traces, so memory grows by one trace's activations per trace (about 0.9 GB per
    smollm2-135m gradient trace at batch 8 x 417 tokens; nnsight #102, #169, #538;
    ``tests/test_tracing.py`` pins that the cycle exists and that it is freed).

    Why not a plain ``gc.collect()``: it scans every tracked object in the process
    (about 0.4 million with torch, transformers and a model: ~0.2 s per trace, most of
    the nnsight-vs-hooks overhead; results/bench/profile_cpu.md). Everything in the
    cycle is created during the trace, so automatic collection is paused for the trace
    (nothing it creates is promoted out of the youngest generation) and one collection
    of generation 0 afterwards scans only what the trace created; older objects count
    as roots. The earlier version froze the pre-trace heap (``gc.freeze``) instead and
    skipped freezing when something had frozen objects already; Python 3.12 freezes a
    few hundred objects at start-up, so on the GPU machine's Python 3.12 every trace
    fell back to a full scan (0.24 s; results/bench/README.md). Pausing the collector
    leaves other code's frozen objects alone on every version.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        try:
            gc.collect(0)
        finally:
            if was_enabled:
                gc.enable()


@contextlib.contextmanager
def trace_context(device: torch.device, autocast: torch.dtype | None, grad: bool, grad_tf32: bool) -> Iterator[None]:
    """Grad mode, autocast and matmul precision around one trace; frees what the trace leaves in cycles afterwards.

    ``grad_tf32`` (``align.capture_precision = "tf32"``) applies to gradient traces only: the
    forward and the backward of a gradient capture run inside this context, and the previous
    setting is restored after, so reads and generation keep fp32 matmuls. Autocast and TF32
    apply on CUDA only.
    """
    tf32 = grad and grad_tf32 and device.type == "cuda"
    with collect_trace_cycles(), torch.set_grad_enabled(grad), matmul_precision("high" if tf32 else None):
        if autocast is not None and device.type == "cuda":
            with torch.autocast("cuda", dtype=autocast):
                yield
        else:
            yield


@contextlib.contextmanager
def matmul_precision(value: str | None) -> Iterator[None]:
    """torch's float32 matmul precision set to ``value`` for the block (None: unchanged), restored after."""
    if value is None:
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def to_host(x: torch.Tensor) -> torch.Tensor:
    """``x`` on the CPU; from a GPU through pinned memory with one asynchronous copy and one sync.

    Why: a ``.cpu()`` of a CUDA tensor copies into pageable memory, which the driver stages
    through a pinned bounce buffer; at the 7B shape that was about 41 ms of each 0.44 s
    gradient pass (results/bench). PyTorch's caching host allocator reuses the pinned block.
    """
    if not x.is_cuda:
        return x.cpu()
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    host.copy_(x, non_blocking=True)
    torch.cuda.current_stream(x.device).synchronize()
    return host
