"""The LoRA step's checks: the one-sync gradient check still names the bad weight."""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.train import lora as F


def test_check_grads_names_the_bad_weight_and_an_overflow():
    """The one-sync check (total norm) must still name the first non-finite weight, and call an overflowing
    but finite gradient what it is."""
    def params(*grads):
        out = {}
        for i, g in enumerate(grads):
            p = torch.nn.Parameter(torch.zeros(3))
            p.grad = g
            out[f"w{i}"] = p
        return out

    F.check_grads(params(torch.ones(3), torch.full((3,), 2.0)), 0)
    with pytest.raises(NonFiniteError, match="step 5: non-finite gradient in 1 LoRA weight.*first w1"):
        F.check_grads(params(torch.ones(3), torch.tensor([1.0, float("nan"), 0.0])), 5)
    with pytest.raises(NonFiniteError, match="first w0"):
        F.check_grads(params(torch.tensor([float("inf"), 0.0, 0.0]), torch.ones(3)), 1)
    with pytest.raises(NonFiniteError, match="overflowed float32"):
        F.check_grads(params(torch.full((3,), 3e38), torch.ones(3)), 2)
    with pytest.raises(RuntimeError, match="no gradient reached 1 LoRA weight.*first w1"):
        F.check_grads(params(torch.ones(3), None), 3)
