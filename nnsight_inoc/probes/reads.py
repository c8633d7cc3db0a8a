"""The front door's residual read: :func:`nnsight_inoc.trace.tracing.read_residuals` with its index checked first.

Why a wrapper: the trace unpacks ``B, P = index.shape``, so a 1-D index (one position per example, the
natural first try: ``batch.final_prompt_idx``) failed with "not enough values to unpack". Here the
shape is checked and the error names the expected one and the fix; the numbers are the trace's own.
"""

from __future__ import annotations

import torch

from nnsight_inoc.trace.chat import Batch
from nnsight_inoc.trace.tracing import TracedLM
from nnsight_inoc.trace.tracing import read_residuals as _read


def check_index(batch: Batch, index: torch.Tensor) -> None:
    """ValueError unless ``index`` is (batch size, positions) of integers."""
    n = batch.input_ids.shape[0]
    if index.dim() != 2 or index.shape[0] != n:
        hint = " (one position per example: pass index[:, None], e.g. batch.final_prompt_idx[:, None])" \
            if index.dim() == 1 else ""
        raise ValueError(f"read_residuals: index must have shape (batch, positions) = ({n}, P), absolute token "
                         f"positions with -1 for missing; got shape {tuple(index.shape)}{hint}. It returns "
                         "(batch, layers, P + M, d_model) float32 on the CPU.")
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"read_residuals: index must hold integer positions, got dtype {index.dtype}")


def read_residuals(tlm: TracedLM, batch: Batch, index: torch.Tensor, mean_masks: torch.Tensor | None = None,
                   layers: list[int] | None = None) -> torch.Tensor:
    """The residual stream after each layer at ``index`` (B, P): (B, len(layers), P + M, d) float32 on the CPU,
    as :func:`nnsight_inoc.trace.tracing.read_residuals`, after :func:`check_index`."""
    check_index(batch, index)
    return _read(tlm, batch, index, mean_masks=mean_masks, layers=layers)
