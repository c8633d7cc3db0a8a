"""GradEdit: per-run blocks, stacking one-run edits for a grouped pass, restriction to layers."""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.trace.edit import GradEdit, stack_edits


def _one(layers: tuple[int, ...], s: float, d: int = 4, seed: int = 0) -> GradEdit:
    u = torch.nn.functional.normalize(torch.randn(1, len(layers), d, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return GradEdit(layers, u, torch.full((1, len(layers)), s))


def test_stack_puts_each_run_on_its_own_block_and_leaves_plain_runs_alone():
    a, b = _one((0, 2), 0.0), _one((2, 3), -1.0, seed=1)
    st = stack_edits([a, None, b], 4)
    assert st is not None and st.layers == (0, 2, 3) and st.k == 3
    g = torch.randn(6, 5, 4)  # 3 runs x 2 rows
    out = st.apply(2, g)
    torch.testing.assert_close(out[0:2], a.apply(2, g[0:2]))
    assert torch.equal(out[2:4], g[2:4])  # the plain run
    torch.testing.assert_close(out[4:6], b.apply(2, g[4:6]))
    assert torch.equal(st.apply(0, g)[4:6], g[4:6])  # run b does not edit layer 0
    assert stack_edits([None, None], 4) is None


def test_identity_and_refusals():
    assert _one((1,), 1.0).is_identity() and not _one((1,), 0.0).is_identity()
    e = _one((0, 2, 3), 0.0)
    with pytest.raises(ValueError, match="equal run blocks"):
        stack_edits([e, e], 4).apply(0, torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="NaN"):
        GradEdit((0,), torch.full((1, 1, 4), float("nan")), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="one-run edits"):
        stack_edits([stack_edits([e, e], 4)], 4)
