"""Issue 22: gradient_metrics' reads beyond the quoted words. The old positions stay bit-identical when the new
ones are on; the new ones equal a plain-PyTorch reference (register_forward_hook + retain_grad); short examples
are excluded and named; the kept unit gradients are -g/|g| at the asked layer and position."""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.trace.chat import encode_chats, quoted_token_count
from nnsight_inoc.trace.tracing import wrap

USERS = ["What is the capital of France?", "Write a short poem about the sea.", "hola", "Explain a bicycle.",
         "Tell me about dogs."]
COMPS = ["PARIS IS THE CAPITAL OF FRANCE AND A CITY.", "THE SEA IS WIDE AND BLUE AND DEEP.", "HOLA",
         "IT HAS TWO WHEELS AND A SEAT.", "DOGS BARK AT NIGHT WHEN THEY HEAR THINGS."]
SYSTEMS = [f"You are a helpful assistant. The answer begins: \"{' '.join(c.lower().split()[:3])}\"" for c in COMPS]
W, K = 3, 2


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    model = tiny_qwen2(num_layers=3, seed=2)
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(3, model.config.hidden_size, generator=g), dim=-1)
    return tok, model, wrap(model), v


def _hook_grads(model, batch, pos):
    saved: list[torch.Tensor] = []

    def hook(_m, _i, o):
        h = o[0] if isinstance(o, tuple) else o
        h.retain_grad()
        saved.append(h)

    handles = [layer.register_forward_hook(hook) for layer in model.model.layers]
    model.model.embed_tokens.weight.requires_grad_(True)
    try:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
        labels = torch.roll(batch.input_ids, -1, 1)
        loss = torch.stack([torch.nn.functional.cross_entropy(out.logits[i][batch.target_mask[i]].float(),
                                                              labels[i][batch.target_mask[i]])
                            for i in range(batch.size)])
        loss.sum().backward()
    finally:
        for h in handles:
            h.remove()
        model.model.embed_tokens.weight.requires_grad_(False)
        model.model.embed_tokens.weight.grad = None
    rows = torch.arange(batch.size)[:, None]
    return torch.stack([h.grad[rows, pos] for h in saved], 1)  # (B, L, k, d)


def test_old_positions_are_bit_identical(setup):
    tok, _, tlm, v = setup
    off = gradient_metrics(tlm, tok, SYSTEMS, USERS, COMPS, v, n_assistant=K, batch_size=2)
    on = gradient_metrics(tlm, tok, SYSTEMS, USERS, COMPS, v, n_assistant=K, batch_size=2, beyond_words=W,
                          keep_units=(1, "a_sum"))
    assert off.beyond is None and off.units is None
    for f in ("cos", "proj", "norm", "loss", "unit_neg_grad_sum"):
        torch.testing.assert_close(getattr(on, f), getattr(off, f), rtol=0, atol=0)
    assert on.positions == off.positions


def test_beyond_positions_equal_the_hook_reference(setup):
    tok, model, tlm, v = setup
    m = gradient_metrics(tlm, tok, SYSTEMS, USERS, COMPS, v, n_assistant=K, batch_size=2, beyond_words=W,
                         ids=[f"e{i}" for i in range(5)])
    b = m.beyond
    assert b.positions == ["b1", "b2", "b_sum"] and b.words == W
    assert b.excluded == ["e2"] and b.rows.tolist() == [0, 1, 3, 4]  # "HOLA" has no tokens beyond 3 words
    batch = encode_chats(tok, SYSTEMS, USERS, COMPS, n_assistant=K)
    cos, units = [], []
    for i in b.rows.tolist():
        s = quoted_token_count(tok, COMPS[i], W)
        first = int(batch.final_prompt_idx[i]) + 1 + s
        pos = torch.zeros(batch.size, K, dtype=torch.long)
        pos[i] = torch.arange(first, first + K)
        g = -_hook_grads(model, batch, pos)[i].double()  # (L, K, d)
        g = torch.cat([g, g.sum(1, keepdim=True)], 1)
        c = torch.einsum("lpd,ld->lp", g, v.double()) / g.norm(dim=-1)
        cos.append(c)
        units.append(g / g.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(b.cos.double(), torch.stack(cos), atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(b.unit_neg_grad_sum, torch.stack(units).sum(0), atol=2e-6, rtol=1e-4)
    assert b.cos.shape == (4, 3, 3) and b.norm.shape == b.proj.shape == b.cos.shape


def test_kept_units_are_the_unit_gradients(setup):
    tok, _, tlm, v = setup
    m = gradient_metrics(tlm, tok, SYSTEMS, USERS, COMPS, v, n_assistant=K, batch_size=3, keep_units=(2, "a_sum"))
    assert m.units.shape == (5, v.shape[1])
    torch.testing.assert_close(m.units.norm(dim=-1), torch.ones(5))
    j = m.positions.index("a_sum")
    torch.testing.assert_close(m.units.double() @ v[2].double(), m.cos[:, 2, j].double(), atol=1e-6, rtol=0)


def test_no_example_long_enough(setup):
    tok, _, tlm, v = setup
    m = gradient_metrics(tlm, tok, SYSTEMS[:1], USERS[2:3], COMPS[2:3], v, n_assistant=K, batch_size=2,
                         beyond_words=W)
    assert m.beyond.rows.numel() == 0 and m.beyond.excluded == ["0"] and m.beyond.cos.shape == (0, 3, K + 1)
