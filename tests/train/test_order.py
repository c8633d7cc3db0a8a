"""Which examples each step sees: seeded, cycled epoch by epoch, the same for every condition of a seed."""

from __future__ import annotations

import pytest

from nnsight_inoc.train.order import probe_steps, step_order


def test_step_order_cycles_epochs():
    order = step_order(5, seed=3, steps=6, batch_size=2)
    flat = [i for b in order for i in b]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert order == step_order(5, seed=3, steps=6, batch_size=2)
    with pytest.raises(ValueError, match="exceeds"):
        step_order(2, seed=0, steps=1, batch_size=3)


def test_probe_steps_include_start_every_k_and_end():
    assert probe_steps(5, 2) == [0, 2, 4, 5]
    assert probe_steps(4, 10) == [0, 4]
