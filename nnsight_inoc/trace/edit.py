"""The residual-stream gradient edit a trace applies inside its backward pass, per run (row block).

A :class:`GradEdit` says, for K runs stacked as K equal row blocks of a batch (K = 1 for one run),
along which unit direction u and by which scale s to multiply the component of the gradient at each
edited decoder-layer output (:func:`~nnsight_inoc.measures.intervention.edit_gradient`). A run
without an intervention has s = 1 and u = 0 at every layer, so one grouped pass can hold intervened
and plain runs side by side, each edited on its own row block only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nnsight_inoc.measures.intervention import edit_gradient


@dataclass(frozen=True, eq=False)
class GradEdit:
    """Per-run gradient edits at some decoder layers.

    ``layers``: the edited layers, strictly increasing; ``u``: (K, len(layers), d) float32 unit (or
    zero) directions; ``s``: (K, len(layers)) float32 scales of the component along u (1 = untouched).
    """

    layers: tuple[int, ...]
    u: torch.Tensor
    s: torch.Tensor

    def __post_init__(self) -> None:
        k = self.u.shape[0] if self.u.dim() == 3 else -1
        if (self.u.dim() != 3 or self.s.shape != (k, len(self.layers)) or self.u.shape[1] != len(self.layers)
                or not self.layers):
            raise ValueError(f"GradEdit needs u (K, n_layers, d) and s (K, n_layers) for {len(self.layers)} layers; "
                             f"got {tuple(self.u.shape)} and {tuple(self.s.shape)}")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"edited layers must be strictly increasing, got {self.layers}")
        if not (torch.isfinite(self.u).all() and torch.isfinite(self.s).all()):
            raise ValueError("a GradEdit direction or scale is NaN/inf")

    @property
    def k(self) -> int:
        """Runs (row blocks) the edit covers."""
        return int(self.u.shape[0])

    def is_identity(self) -> bool:
        """Whether the edit changes nothing (every scale 1 or every direction 0)."""
        return bool(((self.s == 1) | (self.u.abs().sum(-1) == 0)).all())

    def apply(self, layer: int, g: torch.Tensor) -> torch.Tensor:
        """The edited gradient at ``layer``'s output, ``g`` (B, T, d) with B = K equal row blocks."""
        j = self.layers.index(layer)
        b = g.shape[0]
        if b % self.k:
            raise ValueError(f"a batch of {b} rows is not {self.k} equal run blocks (row block k = run k)")
        rows = b // self.k
        u = self.u[:, j].repeat_interleave(rows, dim=0)
        s = self.s[:, j].repeat_interleave(rows, dim=0)
        return edit_gradient(g, u, s)

    def to(self, device: torch.device) -> GradEdit:
        """The same edit with its tensors on ``device`` (where the gradients are: no copy per layer and step)."""
        return GradEdit(self.layers, self.u.to(device), self.s.to(device))


def edited_backward(got: dict[int, torch.Tensor], edit: GradEdit, captured: set[int], rows: torch.Tensor | None = None,
                    index: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Inside a trace's ``with loss.backward():`` block: edit the gradient at every edited layer's output
    and read it at the captured layers, in reverse layer order (nnsight serves ``.grad`` in the order the
    backward pass reaches the layers; an edit flows on to every earlier layer).

    ``got`` maps layer -> that layer's output (the traced tensor); ``rows`` (B, 1) and ``index`` (B, P)
    pick each example's positions. Returns the captured layers' (edited) gradients at those positions,
    upcast to float32, in REVERSE layer order (as the plain capture returns them).
    """
    out: list[torch.Tensor] = []
    for l in sorted(captured | set(edit.layers), reverse=True):
        h = got[l]
        g = h.grad
        if l in edit.layers:
            g = edit.apply(l, g)
            h.grad = g
        if l in captured:
            assert rows is not None and index is not None, "captured layers need rows and index"
            out.append(g[rows.to(g.device), index.to(g.device)].to(torch.promote_types(g.dtype, torch.float32)))
    return out


def stack_edits(edits: list[GradEdit | None], d: int) -> GradEdit | None:
    """One edit for K runs side by side (run k = row block k): each run's own edit, identity for None.

    Every run's edit must cover one run (K = 1). The stacked layers are the union of theirs; a run is
    left alone (u = 0, s = 1) at layers it does not edit. None when no run edits anything.
    """
    if any(e is not None and e.k != 1 for e in edits):
        raise ValueError("stack_edits takes one-run edits (K = 1 each)")
    layers = tuple(sorted({l for e in edits if e is not None for l in e.layers}))
    if not layers:
        return None
    u = torch.zeros(len(edits), len(layers), d)
    s = torch.ones(len(edits), len(layers))
    for k, e in enumerate(edits):
        if e is None:
            continue
        for j, l in enumerate(e.layers):
            u[k, layers.index(l)] = e.u[0, j]
            s[k, layers.index(l)] = e.s[0, j]
    return GradEdit(layers, u, s)
