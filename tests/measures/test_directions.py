"""v(l) recovers a planted direction; degenerate inputs are clear errors; the layer rule is as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnsight_inoc.measures.directions import (
    choose_layer,
    mean_difference,
    monitoring_correlation,
    project,
    separation,
)
from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.tracing import read_residuals, wrap

GROUP_A = ["Write a short poem about the sea.", "What is the capital of France?", "Explain how a bicycle works."]
GROUP_B = ["Give three tips for learning to cook.", "the quick brown fox", "hello world this is a test"]


class _Plant(torch.nn.Module):
    """A decoder layer whose output has a fixed vector added (what promote vs suppress should find)."""

    def __init__(self, inner: torch.nn.Module, vec: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.vec = inner, vec

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if isinstance(out, tuple):
            return (out[0] + self.vec,) + tuple(out[1:])
        return out + self.vec


def _read(tlm, tok, users):
    batch = encode_chats(tok, "You are a helpful assistant.", users)
    return read_residuals(tlm, batch, batch.final_prompt_idx[:, None])  # (n, L, 1, d)


def test_planted_direction_is_recovered():
    tok = tiny_tokenizer()
    model = tiny_qwen2(num_layers=3, hidden_size=32, seed=2)
    model.requires_grad_(False)
    tlm = wrap(model)
    layer = 1
    u = torch.randn(32, generator=torch.Generator().manual_seed(7))
    u = u / u.norm()
    base = _read(tlm, tok, GROUP_A)
    scale = 20 * float(base[:, layer].std(0).norm())  # well above the between-prompt spread

    orig = model.model.layers[layer]
    model.model.layers[layer] = _Plant(orig, scale * u)  # the layer's own output now carries the plant
    try:
        promote = _read(wrap(model), tok, GROUP_A)
    finally:
        model.model.layers[layer] = orig
    suppress = _read(wrap(model), tok, GROUP_B)
    v = mean_difference(promote, suppress)
    assert float(v[layer, 0] @ u) > 0.99
    assert float(v[0, 0] @ u) < 0.9  # the layer before the plant does not see it
    proj = project(torch.cat([promote, suppress]), v)
    assert proj.shape == (6, 3, 1)


def test_degenerate_inputs_are_errors():
    x = torch.randn(4, 2, 1, 8)
    with pytest.raises(ValueError, match="both groups need examples"):
        mean_difference(x[:0], x)
    with pytest.raises(ValueError, match="identical"):
        mean_difference(x, x.clone())
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mean_difference(bad, x)
    with pytest.raises(ValueError, match="shape mismatch"):
        mean_difference(x, torch.randn(4, 3, 1, 8))


def test_separation_and_layer_rule():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(50, 3, 1)) + np.array([0.0, 3.0, 5.0])[None, :, None]
    neg = rng.normal(size=(50, 3, 1))
    sep = separation(pos, neg)
    assert sep.auroc[0, 0] < 0.8 and sep.auroc[2, 0] > 0.99 and sep.cohens_d[2, 0] > 3
    layer, why = choose_layer(np.array([0.5, 0.96, 0.99]), np.array([0.9, 0.7, 0.6]))
    assert layer == 1 and "largest monitoring r" in why  # separating layers only, then best r
    layer, why = choose_layer(np.array([0.5, 0.9, 0.8]), np.array([0.9, 0.7, 0.6]))
    assert layer == 1 and "no layer reached" in why


def test_monitoring_correlation_reports_undefined_as_nan():
    proj = np.random.default_rng(1).normal(size=(20, 2))
    out = monitoring_correlation(proj, np.full(20, 0.5), n_boot=100)
    assert np.isnan(out[0]["pearson_r"]) and "constant" in out[0]["error"]
    good = monitoring_correlation(proj, proj[:, 0] * 2 + 1, n_boot=100)
    assert good[0]["pearson_r"] == pytest.approx(1.0)
