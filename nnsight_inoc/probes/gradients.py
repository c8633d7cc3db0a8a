"""The one gradient loop: per-example cos(-g, v), projection and norm for a system prompt and examples.

encode -> positions -> :func:`~nnsight_inoc.trace.tracing.capture_gradients` (all layers, one
backward pass per batch) -> assistant-token sum -> metrics against v -> checks. The align
stage, the training probes and the precision experiments all call :func:`gradient_metrics`,
so "alignment before training" and "alignment during training" are the same measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from nnsight_inoc.measures.alignment import (
    metrics,
    position_names,
    unit_neg_grad_sum,
    with_sum,
)
from nnsight_inoc.trace.chat import Systems, encode_chats, gradient_index, per_row
from nnsight_inoc.trace.edit import GradEdit
from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.trace.tracing import TracedLM, capture_gradients


@dataclass
class GradientMetrics:
    """Per-example measurements, examples in input order; P = 1 + n_assistant + 1 positions."""

    positions: list[str]  # final_prompt, a1..ak, a_sum
    cos: torch.Tensor  # (n, L, P) float32: cos(-g, v)
    proj: torch.Tensor  # (n, L, P) float32: <-g, v>
    norm: torch.Tensor  # (n, L, P) float32: |g|
    loss: torch.Tensor  # (n,) float32: mean CE over each example's completion tokens (nats)
    unit_neg_grad_sum: torch.Tensor  # (L, P, d) float64: sum over examples of -g/|g| (the null needs only this)
    batch_size: int  # examples per trace, so callers can reproduce the per-batch summation order


def gradient_metrics(
    tlm: TracedLM,
    tok: PreTrainedTokenizerBase,
    system: Systems,
    prompts: Sequence[str],
    completions: Sequence[str],
    v: torch.Tensor,
    *,
    n_assistant: int,
    batch_size: int,
    ids: Sequence[str] | None = None,
    steer: dict[int, torch.Tensor] | None = None,
    edit: GradEdit | None = None,
    label: str = "",
    on_batch: Callable[[int], None] | None = None,
) -> GradientMetrics:
    """Measure every (prompt, completion) under ``system`` (one for all, or one per example) against the
    unit direction ``v`` (L, d).

    ``steer`` ({layer: (d,) vector}) steers the forward pass as preventative-steering training
    does; ``edit`` (:class:`~nnsight_inoc.trace.edit.GradEdit`, K run blocks dividing every batch) applies a
    gradient-intervention arm inside the backward pass, so the metrics are those of the edited gradient
    training under the arm descends. Raises :class:`NonFiniteError` naming ``label`` and the examples (``ids``, else their
    indices) when a loss or gradient is NaN/inf or a gradient is exactly zero (no angle).
    """
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"need as many completions as prompts (>= 1), got {len(prompts)} and {len(completions)}")
    names = list(ids) if ids is not None else [str(i) for i in range(len(prompts))]
    systems = per_row(system, len(prompts))
    cos, proj, norm, loss = [], [], [], []
    unit_sum: torch.Tensor | None = None
    for s in range(0, len(prompts), batch_size):
        batch = encode_chats(tok, systems[s : s + batch_size], prompts[s : s + batch_size],
                             completions[s : s + batch_size], n_assistant=n_assistant)
        try:
            res = capture_gradients(tlm, batch, gradient_index(batch), steer=steer, edit=edit)
        except NonFiniteError as err:
            raise NonFiniteError(f"{label}, examples {names[s:s + batch_size]}: {err}") from err
        g = with_sum(res.grads)
        m = metrics(g, v)
        bad = torch.isnan(m.cos)
        if bad.any():
            b, layer, p = bad.nonzero()[0].tolist()
            raise NonFiniteError(f"{label}: zero gradient (no angle) for {names[s + b]} at layer {layer}, position {p}")
        u = unit_neg_grad_sum(g)
        unit_sum = u if unit_sum is None else unit_sum + u
        cos.append(m.cos)
        proj.append(m.proj)
        norm.append(m.norm)
        loss.append(res.loss)
        if on_batch is not None:
            on_batch(batch.size)
    assert unit_sum is not None
    return GradientMetrics(position_names(n_assistant), torch.cat(cos), torch.cat(proj), torch.cat(norm),
                           torch.cat(loss), unit_sum, batch_size)
