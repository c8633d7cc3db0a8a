"""Cross-context transfer gradients (probes/transfer.py) on a tiny random Qwen2, in float64.

Pinned: slot k's gradient is exactly prompt k's own (K slots in one pass = K passes of one slot,
per-row systems included); the trait log-odds gradient agrees with central finite differences of
J along the training step; the inner product splits exactly into residual + rest, with the sign
convention <-grad L, grad J>.
"""

from __future__ import annotations

import math

import pytest
import torch

from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.probes.transfer import accumulate_loss_gradients, slot_gradients, transfer_scores
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.loss import loss_targets, per_example_loss
from nnsight_inoc.trace.tracing import TracingError, differentiable_losses, wrap
from nnsight_inoc.train import grouped as G

TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]
USERS = ["What is the capital of France?", "Write a short poem.", "hola", "Explain a bicycle.", "the fox"]
COMPS = ["Paris is the capital.", "THE SEA IS WIDE.", "hola como estas", "It has wheels.", "jumps over"]
TRAITED = [c.upper() for c in COMPS]
SYSTEMS = ["You are a helpful assistant.", "You always capitalise your responses.",
           [f"You are a helpful assistant. The answer begins: \"{c.split()[0]}\"" for c in COMPS]]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = tiny_qwen2(num_layers=2, seed=3).double()
    model.requires_grad_(False)
    model.eval()
    return model, wrap(model), tiny_tokenizer()


def _grouped(model, k: int, random_b: bool) -> G.GroupedLora:
    with torch.random.fork_rng():
        torch.manual_seed(11)
        g = G.fresh(model, k, r=4, alpha=8.0, target_modules=TARGETS)
        for a, b in zip(g.A, g.B):
            a.data = a.data.double()
            one = torch.randn_like(b.data[:1]) * 0.05 if random_b else b.data[:1]
            b.data = one.repeat(k, 1, 1).double()  # every slot starts equal, as PEFT's init per seed does
    return g


def _grads(setup, systems, completions, random_b=True, sign=1.0):
    model, tlm, tok = setup
    g = _grouped(model, len(systems), random_b)
    with g.attached(model, None):
        accumulate_loss_gradients(tlm, tok, g, systems, USERS, completions, batch_size=2, sign=sign)
    return slot_gradients(g, ["o_proj", "down_proj"])


def test_slots_are_each_prompts_own_gradient(setup):
    together = _grads(setup, SYSTEMS, COMPS)
    for k, system in enumerate(SYSTEMS):
        alone = _grads(setup, [system], COMPS)
        torch.testing.assert_close(together.vectors[k], alone.vectors[0], rtol=1e-10, atol=1e-12)
    assert not torch.equal(together.vectors[0], together.vectors[1])  # the prompts do differ


def test_b_zero_init_moves_only_b(setup):
    grads = _grads(setup, SYSTEMS[:1], COMPS, random_b=False)
    model, _, _ = setup
    g = _grouped(model, 1, False)
    sizes = [(a.numel(), b.numel()) for a, b in zip(g.A, g.B)]
    pos, a_part, b_part = 0, [], []
    for na, nb in sizes:
        a_part.append(grads.vectors[0, pos:pos + na])
        b_part.append(grads.vectors[0, pos + na:pos + na + nb])
        pos += na + nb
    assert float(torch.cat(a_part).abs().max()) == 0.0  # PEFT's B = 0: no gradient reaches A
    assert float(torch.cat(b_part).abs().max()) > 0.0


def _objective(setup, g, system, sign_pairs) -> float:
    """J = sum over (completions, sign) of sign * mean CE, no gradient."""
    model, _, tok = setup
    total = 0.0
    with g.attached(model, None), torch.no_grad():  # a plain forward in float64: the reference, no nnsight
        for comps, sign in sign_pairs:
            batch = encode_chats(tok, system, USERS, comps)
            targets = loss_targets(batch)
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, logits_to_keep=targets.window)
            total += sign * float(per_example_loss(out.logits, targets).mean())
    return total


def test_trait_gradient_matches_finite_differences(setup):
    model, tlm, tok = setup
    test_prompt = "You are a helpful assistant."
    # grad J with J = mean CE(untraited) - mean CE(traited) (the trait log-odds)
    g = _grouped(model, 1, True)
    with g.attached(model, None):
        accumulate_loss_gradients(tlm, tok, g, [test_prompt], USERS, COMPS, 2, sign=1.0)
        accumulate_loss_gradients(tlm, tok, g, [test_prompt], USERS, TRAITED, 2, sign=-1.0)
    grad_j = slot_gradients(g, ["o_proj", "down_proj"]).vectors[0]
    step = -_grads(setup, [SYSTEMS[1]], TRAITED).vectors[0]  # descent direction of a training loss
    step = step / step.norm()
    # Qwen2's RMSNorm computes in float32 even in a float64 model, so J carries ~1e-9 of noise: a step of
    # 1e-2 keeps that below the central difference's own O(eps^2) error (measured: 5e-5 relative).
    eps = 1e-2
    values = []
    for e in (eps, -eps):
        moved = _grouped(model, 1, True)
        pos = 0
        for a, b in zip(moved.A, moved.B):
            for p in (a, b):
                n = p.numel()
                p.data = p.data + e * step[pos:pos + n].reshape(p.shape)
                pos += n
        values.append(_objective(setup, moved, test_prompt, [(COMPS, 1.0), (TRAITED, -1.0)]))
    fd = (values[0] - values[1]) / (2 * eps)
    analytic = float(grad_j.double() @ step.double())
    assert math.isclose(fd, analytic, rel_tol=5e-4), (fd, analytic)


def test_scores_split_and_sign():
    loss_grad = torch.tensor([1.0, -2.0, 0.5, 3.0])
    trait_grad = torch.tensor([-1.0, 1.0, 2.0, 0.0])
    residual = torch.tensor([True, False, True, False])
    s = transfer_scores(loss_grad, trait_grad, residual)
    assert s["inner"] == pytest.approx(1.0 + 2.0 - 1.0)  # <-g_L, g_J>
    assert s["inner_residual"] + s["inner_rest"] == pytest.approx(s["inner"])
    assert s["inner_residual"] == pytest.approx(1.0 - 1.0)
    assert s["cos"] == pytest.approx(2.0 / (math.sqrt(1 + 4 + 0.25 + 9) * math.sqrt(6)))
    assert math.isnan(transfer_scores(torch.zeros(4), trait_grad, residual)["cos"])
    with pytest.raises(ValueError, match="shapes differ"):
        transfer_scores(loss_grad, trait_grad[:3], residual)


def test_refusals(setup):
    model, tlm, tok = setup
    g = _grouped(model, 2, True)
    with g.attached(model, None):
        with pytest.raises(ValueError, match="grouped LoRA slots"):
            accumulate_loss_gradients(tlm, tok, g, ["a"], USERS, COMPS, 2)
        with pytest.raises(ValueError, match="one completion per user"):
            accumulate_loss_gradients(tlm, tok, g, ["a", "b"], USERS, COMPS[:2], 2)
    # nothing trainable upstream of the loss: refused, not a silent zero gradient
    with pytest.raises(TracingError, match="no autograd graph"):
        differentiable_losses(tlm, encode_chats(tok, "s", USERS[:2], COMPS[:2]))
