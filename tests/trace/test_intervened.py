"""Gradient interventions inside the nnsight trace equal a plain-PyTorch ``tensor.register_hook`` reference.

Pinned here (issue 22): the training step's loss and LoRA gradients under an edit equal a forward
hook that registers a tensor hook on each edited layer's output doing the same edit; after a
``zero`` edit along v the residual gradient captured at every edited layer has no v component;
the edit along a direction equal to v is the v edit; an identity edit is the plain step; a grouped
batch edits its own row block only; nothing stays on the model.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest
import torch

from nnsight_inoc.measures.intervention import edit_gradient, random_directions, unit
from nnsight_inoc.models.tiny import tiny_tokenizer
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.edit import GradEdit
from nnsight_inoc.trace.intervened import intervened_step_losses
from nnsight_inoc.trace.tracing import capture_gradients, wrap
from nnsight_inoc.train import lora as F
from tests._lora import tiny_lora

USERS = ["What is the capital of France?", "Write a short poem about the sea.", "hola", "Explain a bicycle."]
COMPS = ["Paris is the capital of France.", "THE SEA IS WIDE AND BLUE.", "como estas", "It has two wheels."]
SYSTEM = "You are a helpful assistant."
N_LAYERS = 4


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def batch(tok):
    return encode_chats(tok, SYSTEM, USERS, COMPS)


def _lora(seed: int = 0) -> torch.nn.Module:
    return tiny_lora(("q_proj", "v_proj", "o_proj"), seed, N_LAYERS)


def _dirs(d: int, seed: int = 3) -> torch.Tensor:
    return random_directions(N_LAYERS, d, seed)


def _edit(u: torch.Tensor, layers: tuple[int, ...], s: float, k: int = 1) -> GradEdit:
    uu = u[list(layers)].unsqueeze(0).repeat(k, 1, 1)
    return GradEdit(layers, uu, torch.full((k, len(layers)), s))


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.base_model.model.model.layers


@contextlib.contextmanager
def _hooked(model: torch.nn.Module, edits: dict[int, tuple[torch.Tensor, torch.Tensor]],
            keep: dict[int, torch.Tensor] | None = None) -> Iterator[None]:
    """Reference: a forward hook per edited layer registering a tensor hook that edits the output's gradient."""

    def make(l: int, u: torch.Tensor, s: torch.Tensor):
        def hook(_m, _i, out):
            h = out[0] if isinstance(out, tuple) else out
            h.register_hook(lambda g: edit_gradient(g, u.expand(g.shape[0], -1), s.expand(g.shape[0])))
            if keep is not None:  # tensor hooks chain: this one receives the edited gradient
                h.register_hook(lambda g, l=l: keep.__setitem__(l, g))
            return out

        return hook

    handles = [_decoder_layers(model)[l].register_forward_hook(make(l, u, s)) for l, (u, s) in edits.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("layers,s", [((0, 1, 2, 3), 0.0), ((1, 3), -1.0), ((2,), 2.5)])
def test_edited_step_equals_tensor_hook_reference(batch, layers, s):
    model = _lora()
    tlm = wrap(model)
    u = _dirs(tlm.d_model)
    loss = intervened_step_losses(tlm, batch, _edit(u, layers, s))
    got = _grads(model)
    with _hooked(model, {l: (u[l], torch.tensor(s)) for l in layers}):
        ref = F.batch_loss(model, batch)
    ref.backward()
    want = _grads(model)
    plain = F.batch_loss(model, batch)
    plain.backward()
    unedited = _grads(model)
    torch.testing.assert_close(loss[0], ref.detach(), rtol=1e-6, atol=1e-6)
    assert set(got) == set(want) and got
    for n in got:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(got[n], unedited[n], rtol=1e-4, atol=1e-6) for n in got)  # the edit did something


def test_identity_edit_is_the_plain_step(batch):
    model = _lora()
    tlm = wrap(model)
    u = _dirs(tlm.d_model)
    loss = intervened_step_losses(tlm, batch, _edit(u, (0, 2), 1.0))
    got = _grads(model)
    ref = F.batch_loss(model, batch)
    ref.backward()
    want = _grads(model)
    torch.testing.assert_close(loss[0], ref.detach(), rtol=1e-6, atol=1e-6)
    for n in got:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-8)


def test_zero_v_leaves_no_v_component_at_any_layer(batch):
    model = _lora()
    model.requires_grad_(False)
    tlm = wrap(model)
    v = unit(torch.randn(N_LAYERS, tlm.d_model, generator=torch.Generator().manual_seed(7)))
    idx = torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], dim=1)
    layers = tuple(range(N_LAYERS))
    before = capture_gradients(tlm, batch, idx)
    after = capture_gradients(tlm, batch, idx, edit=_edit(v, layers, 0.0))
    comp_before = torch.einsum("blpd,ld->blp", before.grads, v).abs()
    comp_after = torch.einsum("blpd,ld->blp", after.grads, v).abs()
    assert float(comp_before.max()) > 1e-4
    assert float(comp_after.max()) <= 1e-6 * float(after.grads.norm(dim=-1).max())
    torch.testing.assert_close(after.loss, before.loss)  # the forward pass is unchanged


def test_captured_edit_equals_reference_at_every_layer(batch):
    """The probe's edited gradients equal what a tensor hook edits (edits upstream flow down)."""
    model = _lora()
    model.requires_grad_(False)
    tlm = wrap(model)
    u = _dirs(tlm.d_model)
    idx = torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], dim=1)
    layers = (1, 3)
    got = capture_gradients(tlm, batch, idx, layers=[1, 2, 3], edit=_edit(u, layers, -1.0))
    kept: dict[int, torch.Tensor] = {}
    plain_keep: list[torch.Tensor] = []

    def keep2(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        h.retain_grad()
        plain_keep.append(h)

    h2 = _decoder_layers(model)[2].register_forward_hook(keep2)
    emb = model.base_model.model.model.embed_tokens
    h_emb = emb.register_forward_hook(lambda _m, _i, o: o.requires_grad_(True))
    try:
        with torch.enable_grad(), _hooked(model, {l: (u[l], torch.tensor(-1.0)) for l in layers}, keep=kept):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids).logits
            labels = torch.roll(batch.input_ids, -1, 1)
            per_ex = torch.stack([
                torch.nn.functional.cross_entropy(logits[i][batch.target_mask[i]], labels[i][batch.target_mask[i]])
                for i in range(batch.size)])
            per_ex.sum().backward()
    finally:
        h2.remove()
        h_emb.remove()
    rows = torch.arange(batch.size)[:, None]
    torch.testing.assert_close(got.grads[:, 0], kept[1][rows, idx], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(got.grads[:, 1], plain_keep[0].grad[rows, idx], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(got.grads[:, 2], kept[3][rows, idx], rtol=1e-5, atol=1e-8)


def test_direction_equal_to_v_is_the_v_edit(batch):
    model = _lora()
    tlm = wrap(model)
    v = unit(torch.randn(N_LAYERS, tlm.d_model, generator=torch.Generator().manual_seed(7)))
    rand_like_v = GradEdit((0, 1, 2, 3), v.unsqueeze(0).clone(), torch.zeros(1, 4))
    intervened_step_losses(tlm, batch, rand_like_v)
    a = _grads(model)
    intervened_step_losses(tlm, batch, _edit(v, (0, 1, 2, 3), 0.0))
    b = _grads(model)
    for n in a:
        assert torch.equal(a[n], b[n])


def test_grouped_rows_edit_their_own_block_only(tok):
    """Two runs stacked as row blocks: block 0 edited, block 1 plain; each block's gradient equals its run alone."""
    model = _lora()
    model.requires_grad_(False)
    tlm = wrap(model)
    u = _dirs(tlm.d_model)
    both = encode_chats(tok, SYSTEM, USERS[:2] * 2, COMPS[:2] * 2)
    one = encode_chats(tok, SYSTEM, USERS[:2], COMPS[:2])
    idx2 = torch.cat([both.final_prompt_idx[:, None], both.assistant_idx], dim=1)
    idx1 = torch.cat([one.final_prompt_idx[:, None], one.assistant_idx], dim=1)
    layers = (0, 1, 2, 3)
    uu = torch.stack([u[list(layers)], torch.zeros(4, tlm.d_model)])
    ss = torch.stack([torch.zeros(4), torch.ones(4)])
    grouped = capture_gradients(tlm, both, idx2, edit=GradEdit(layers, uu, ss))
    alone_edit = capture_gradients(tlm, one, idx1, edit=_edit(u, layers, 0.0))
    alone_plain = capture_gradients(tlm, one, idx1)
    torch.testing.assert_close(grouped.grads[:2], alone_edit.grads, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(grouped.grads[2:], alone_plain.grads, rtol=1e-5, atol=1e-8)


def test_nothing_stays_on_the_model(batch):
    model = _lora()
    tlm = wrap(model)
    u = _dirs(tlm.d_model)
    with torch.no_grad():
        before = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits
    intervened_step_losses(tlm, batch, _edit(u, (0, 3), 0.0))
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids).logits
    assert torch.equal(before, after)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_bad_shapes_are_refused(batch):
    tlm = wrap(_lora())
    u = _dirs(tlm.d_model)
    with pytest.raises(ValueError, match="strictly increasing"):
        GradEdit((2, 1), u[[2, 1]].unsqueeze(0), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="equal run blocks"):
        intervened_step_losses(tlm, batch.take(list(range(3))) if hasattr(batch, "take") else
                               encode_chats(tiny_tokenizer(), SYSTEM, USERS[:3], COMPS[:3]),
                               _edit(u, (0,), 0.0, k=2))
    with pytest.raises(IndexError):
        intervened_step_losses(tlm, batch, GradEdit((9,), torch.zeros(1, 1, tlm.d_model), torch.zeros(1, 1)))
