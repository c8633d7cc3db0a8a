"""The one gradient loop equals per-batch capture_gradients + metrics, and names bad examples."""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.measures.alignment import metrics, unit_neg_grad_sum, with_sum
from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.trace.chat import encode_chats, gradient_index
from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.trace.tracing import capture_gradients, wrap

USERS = ["What is the capital of France?", "Write a short poem about the sea.", "hola", "Explain a bicycle."]
COMPS = ["Paris is the capital of France.", "THE SEA IS WIDE AND BLUE.", "hola como estas", "It has two wheels."]
SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    tlm = wrap(tiny_qwen2(num_layers=3, seed=2))
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(tlm.n_layers, tlm.d_model, generator=g), dim=-1)
    return tok, tlm, v


def test_loop_equals_one_trace_per_batch(setup):
    tok, tlm, v = setup
    got = gradient_metrics(tlm, tok, SYSTEM, USERS, COMPS, v, n_assistant=2, batch_size=3)
    cos, loss, unit = [], [], None
    for s in (0, 3):
        b = encode_chats(tok, SYSTEM, USERS[s : s + 3], COMPS[s : s + 3], n_assistant=2)
        res = capture_gradients(tlm, b, gradient_index(b))
        g = with_sum(res.grads)
        cos.append(metrics(g, v).cos)
        loss.append(res.loss)
        u = unit_neg_grad_sum(g)
        unit = u if unit is None else unit + u
    assert got.positions == ["final_prompt", "a1", "a2", "a_sum"]
    assert got.cos.shape == (4, 3, 4) and got.loss.shape == (4,)
    torch.testing.assert_close(got.cos, torch.cat(cos), rtol=0, atol=0)
    torch.testing.assert_close(got.loss, torch.cat(loss), rtol=0, atol=0)
    torch.testing.assert_close(got.unit_neg_grad_sum, unit, rtol=0, atol=0)


def test_progress_callback_counts_examples(setup):
    tok, tlm, v = setup
    seen: list[int] = []
    gradient_metrics(tlm, tok, SYSTEM, USERS, COMPS, v, n_assistant=1, batch_size=3, on_batch=seen.append)
    assert seen == [3, 1]


def test_bad_inputs_and_named_failures(setup, monkeypatch):
    tok, tlm, v = setup
    with pytest.raises(ValueError, match="as many completions"):
        gradient_metrics(tlm, tok, SYSTEM, USERS, COMPS[:2], v, n_assistant=1, batch_size=2)
    import nnsight_inoc.probes.gradients as G

    def boom(*a, **k):
        raise NonFiniteError("non-finite loss for batch rows [0]")

    monkeypatch.setattr(G, "capture_gradients", boom)
    with pytest.raises(NonFiniteError, match=r"probe x, examples \['e0', 'e1'\]"):
        gradient_metrics(tlm, tok, SYSTEM, USERS[:2], COMPS[:2], v, n_assistant=1, batch_size=2,
                         ids=["e0", "e1"], label="probe x")
