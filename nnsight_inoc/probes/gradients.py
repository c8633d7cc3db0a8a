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
    beyond_position_names,
    metrics,
    position_names,
    unit_neg_grad_sum,
    with_sum,
    with_total,
)
from nnsight_inoc.trace.chat import (
    Systems,
    beyond_index,
    encode_chats,
    gradient_index,
    per_row,
    quoted_token_count,
)
from nnsight_inoc.trace.edit import GradEdit
from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.trace.tracing import TracedLM, capture_gradients


@dataclass
class BeyondMetrics:
    """Issue 22: the same measurements at the first k completion tokens after the completion's first ``words``
    words (:func:`~nnsight_inoc.trace.chat.quoted_token_count`), b1..bk and b_sum, on the examples that have k
    such tokens (``rows``: indices in input order); the others are counted in ``excluded``, never dropped
    silently."""

    words: int
    positions: list[str]  # b1..bk, b_sum
    rows: torch.Tensor  # (m,) long
    excluded: list[str]  # ids (or indices) of the examples without k tokens beyond the words
    cos: torch.Tensor  # (m, L, k + 1) float32
    proj: torch.Tensor
    norm: torch.Tensor
    unit_neg_grad_sum: torch.Tensor  # (L, k + 1, d) float64 over the m rows


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
    beyond: BeyondMetrics | None = None  # issue 22 (beyond_words > 0): positions beyond the quoted words
    units: torch.Tensor | None = None  # (n, d) float32 -g/|g| at keep_units = (layer, position), else None


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
    beyond_words: int = 0,
    keep_units: tuple[int, str] | None = None,
) -> GradientMetrics:
    """Measure every (prompt, completion) under ``system`` (one for all, or one per example) against the
    unit direction ``v`` (L, d).

    ``steer`` ({layer: (d,) vector}) steers the forward pass as preventative-steering training
    does; ``edit`` (:class:`~nnsight_inoc.trace.edit.GradEdit`, K run blocks dividing every batch) applies a
    gradient-intervention arm inside the backward pass, so the metrics are those of the edited gradient
    training under the arm descends. Raises :class:`NonFiniteError` naming ``label`` and the examples (``ids``, else their
    indices) when a loss or gradient is NaN/inf or a gradient is exactly zero (no angle).

    ``beyond_words`` > 0 (issue 22) also reads the ``n_assistant`` completion tokens after the completion's
    first ``beyond_words`` words (``.beyond``), in the same backward pass: the extra columns are gathered from
    the same gradients, so every other number is unchanged. ``keep_units`` = (layer, position name) keeps each
    example's unit -gradient there (``.units``; the structured null's principal components need them).
    """
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"need as many completions as prompts (>= 1), got {len(prompts)} and {len(completions)}")
    names = list(ids) if ids is not None else [str(i) for i in range(len(prompts))]
    systems = per_row(system, len(prompts))
    cos, proj, norm, loss = [], [], [], []
    unit_sum: torch.Tensor | None = None
    ext = _Extra(beyond_words, n_assistant, keep_units, position_names(n_assistant))
    for s in range(0, len(prompts), batch_size):
        batch = encode_chats(tok, systems[s : s + batch_size], prompts[s : s + batch_size],
                             completions[s : s + batch_size], n_assistant=n_assistant)
        bidx = ext.index(tok, batch, completions[s : s + batch_size])
        try:
            res = capture_gradients(tlm, batch, gradient_index(batch) if bidx is None else gradient_index(batch, bidx),
                                    steer=steer, edit=edit)
        except NonFiniteError as err:
            raise NonFiniteError(f"{label}, examples {names[s:s + batch_size]}: {err}") from err
        g = with_sum(res.grads if bidx is None else res.grads[:, :, : 1 + n_assistant])
        ext.add(res.grads, g, bidx, v, s, names, label)
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
                           torch.cat(loss), unit_sum, batch_size, ext.beyond(v), ext.units())


class _Extra:
    """The optional reads of :func:`gradient_metrics`, gathered batch by batch: the b positions and the units."""

    def __init__(self, words: int, k: int, keep_units: tuple[int, str] | None, positions: list[str]) -> None:
        self.words, self.k = words, k
        self.unit_at = None if keep_units is None else (keep_units[0], positions.index(keep_units[1]))
        self.rows: list[torch.Tensor] = []
        self.excluded: list[str] = []
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.sum: torch.Tensor | None = None
        self.unit_rows: list[torch.Tensor] = []

    def index(self, tok, batch, completions: Sequence[str]) -> torch.Tensor | None:
        if self.words <= 0:
            return None
        return beyond_index(batch, [quoted_token_count(tok, c, self.words) for c in completions], self.k)

    def add(self, raw: torch.Tensor, g: torch.Tensor, bidx: torch.Tensor | None, v: torch.Tensor, s: int,
            names: list[str], label: str) -> None:
        if self.unit_at is not None:
            layer, j = self.unit_at
            x = -g[:, layer, j].double()
            self.unit_rows.append((x / x.norm(dim=-1, keepdim=True)).float())
        if bidx is None:
            return
        ok = (bidx >= 0).all(1)
        self.excluded += [names[s + i] for i in torch.nonzero(~ok)[:, 0].tolist()]
        if not ok.any():
            return
        gb = with_total(raw[ok][:, :, 1 + self.k :])
        m = metrics(gb, v)
        bad = torch.isnan(m.cos)
        if bad.any():
            b, layer, p = bad.nonzero()[0].tolist()
            row = s + int(torch.nonzero(ok)[b, 0])
            raise NonFiniteError(f"{label}: zero gradient (no angle) for {names[row]} at layer {layer}, "
                                 f"beyond-quote position {p}")
        u = unit_neg_grad_sum(gb)
        self.sum = u if self.sum is None else self.sum + u
        self.rows.append(torch.nonzero(ok)[:, 0] + s)
        self.parts.append((m.cos, m.proj, m.norm))

    def beyond(self, v: torch.Tensor) -> BeyondMetrics | None:
        if self.words <= 0:
            return None
        L, d = v.shape
        empty = torch.zeros(0, L, self.k + 1)
        cat = (lambda i: torch.cat([p[i] for p in self.parts])) if self.parts else (lambda i: empty)
        rows = torch.cat(self.rows) if self.rows else torch.zeros(0, dtype=torch.long)
        total = self.sum if self.sum is not None else torch.zeros(L, self.k + 1, d, dtype=torch.float64)
        return BeyondMetrics(self.words, beyond_position_names(self.k), rows, self.excluded, cat(0), cat(1), cat(2),
                             total)

    def units(self) -> torch.Tensor | None:
        return torch.cat(self.unit_rows) if self.unit_rows else None
