"""Pins the trace conventions against plain-PyTorch references on a tiny random Qwen2."""

from __future__ import annotations

import contextlib
import gc

import pytest
import torch

from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.trace import context as trace_ctx
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.trace.tracing import capture_gradients, read_residuals, wrap

USERS = ["What is the capital of France?", "Write a short poem about the sea.", "hola"]
COMPS = ["Paris is the capital of France.", "THE SEA IS WIDE AND BLUE.", "hola como estas"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model():
    m = tiny_qwen2(num_layers=3, seed=1).double()
    m.requires_grad_(False)
    return m


def _positions(batch):
    return torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], dim=1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_layer_output_matches_hidden_states_and_hooks(tok, model, side):
    batch = encode_chats(tok, "Respond in ALL CAPS.", USERS, COMPS, padding_side=side)
    tlm = wrap(model)
    pos = _positions(batch)
    got = read_residuals(tlm, batch, pos, mean_masks=batch.completion_mask[:, None, :])
    with torch.no_grad():
        ref = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            output_hidden_states=True,
        )
    hooked: list[torch.Tensor] = []
    handles = [
        layer.register_forward_hook(lambda m, i, o: hooked.append(o[0] if isinstance(o, tuple) else o))
        for layer in model.model.layers
    ]
    try:
        with torch.no_grad():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    finally:
        for h in handles:
            h.remove()
    rows = torch.arange(batch.size)[:, None]
    for l in range(tlm.n_layers):
        want = hooked[l][rows, pos].float()
        assert torch.equal(got[:, l, :4], want)
        if l < tlm.n_layers - 1:  # the last hidden_states entry has the final norm applied
            assert torch.equal(got[:, l, :4], ref.hidden_states[l + 1][rows, pos].float())
        m = batch.completion_mask.double()
        mean = (hooked[l] * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        torch.testing.assert_close(got[:, l, 4], mean.float())
    assert not torch.allclose(ref.hidden_states[-1], hooked[-1])


def test_padding_side_does_not_change_reads(tok, model):
    tlm = wrap(model)
    a = encode_chats(tok, "sys", USERS, COMPS, padding_side="left")
    b = encode_chats(tok, "sys", USERS, COMPS, padding_side="right")
    ra = read_residuals(tlm, a, _positions(a))
    rb = read_residuals(tlm, b, _positions(b))
    torch.testing.assert_close(ra, rb, atol=1e-5, rtol=1e-5)


def test_final_prompt_token_is_just_before_first_assistant_token(tok):
    for side in ("left", "right"):
        batch = encode_chats(tok, "sys", USERS, COMPS, padding_side=side)
        for i, comp in enumerate(COMPS):
            f = int(batch.final_prompt_idx[i])
            first = tok(comp, add_special_tokens=False)["input_ids"][0]
            assert int(batch.input_ids[i, f + 1]) == first
            assert int(batch.assistant_idx[i, 0]) == f + 1
            assert tok.decode(batch.input_ids[i, : f + 1][batch.attention_mask[i, : f + 1].bool()]).endswith(
                "<|im_start|>assistant\n"
            )


def _hook_reference(model, batch, pos):
    """Gradients via register_forward_hook + retain_grad: the obvious slow path."""
    saved: list[torch.Tensor] = []

    def hook(_m, _i, o):
        h = o[0] if isinstance(o, tuple) else o
        h.retain_grad()
        saved.append(h)

    model.model.embed_tokens.weight.requires_grad_(True)
    handles = [layer.register_forward_hook(hook) for layer in model.model.layers]
    try:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
        labels = torch.roll(batch.input_ids, -1, 1)
        losses = []
        for i in range(batch.size):
            m = batch.target_mask[i]
            losses.append(torch.nn.functional.cross_entropy(out.logits[i][m].float(), labels[i][m]))
        torch.stack(losses).sum().backward()
    finally:
        for h in handles:
            h.remove()
        model.embed_tokens_grad = None
        model.model.embed_tokens.weight.requires_grad_(False)
        model.model.embed_tokens.weight.grad = None
    rows = torch.arange(batch.size)[:, None]
    return torch.stack(losses).detach(), torch.stack([h.grad[rows, pos] for h in saved], 1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_gradients_match_hook_reference(tok, model, side):
    batch = encode_chats(tok, "Respond in ALL CAPS.", USERS, COMPS, padding_side=side)
    pos = _positions(batch)
    res = capture_gradients(wrap(model), batch, pos)
    ref_loss, ref_g = _hook_reference(model, batch, pos)
    torch.testing.assert_close(res.loss, ref_loss.float())
    torch.testing.assert_close(res.grads, ref_g.float(), atol=1e-7, rtol=1e-5)
    assert res.grads.abs().sum() > 0


def test_batched_equals_one_at_a_time(tok, model):
    tlm = wrap(model)
    batch = encode_chats(tok, "sys", USERS, COMPS)
    full = capture_gradients(tlm, batch, _positions(batch))
    for i in range(len(USERS)):
        one = encode_chats(tok, "sys", USERS[i : i + 1], COMPS[i : i + 1])
        r = capture_gradients(tlm, one, _positions(one))
        torch.testing.assert_close(full.loss[i : i + 1], r.loss, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(full.grads[i : i + 1], r.grads, atol=1e-7, rtol=1e-5)


def test_gradient_matches_central_finite_difference(tok, model):
    """Perturb layer 1's output at one position along a direction; compare d loss."""
    tlm = wrap(model)
    batch = encode_chats(tok, "sys", USERS[:1], COMPS[:1])
    pos = _positions(batch)
    res = capture_gradients(tlm, batch, pos)
    layer, p = 1, 0
    t = int(pos[0, p])
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(tlm.d_model, generator=gen, dtype=torch.float64)
    u /= u.norm()
    eps = 1e-3  # Qwen2RMSNorm computes in fp32 even for a float64 model: smaller eps drowns in rounding

    def loss_with(delta: float) -> float:
        def hook(_m, _i, o):
            h = (o[0] if isinstance(o, tuple) else o).clone()
            h[0, t] += delta * u
            return (h,) + tuple(o[1:]) if isinstance(o, tuple) else h

        handle = model.model.layers[layer].register_forward_hook(hook)
        try:
            with torch.no_grad():
                out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            position_ids=batch.position_ids)
        finally:
            handle.remove()
        labels = torch.roll(batch.input_ids, -1, 1)[0]
        m = batch.target_mask[0]
        return float(torch.nn.functional.cross_entropy(out.logits[0][m], labels[m]))

    fd = (loss_with(eps) - loss_with(-eps)) / (2 * eps)
    analytic = float(res.grads[0, layer, p].double() @ u)
    assert abs(fd - analytic) <= 1e-6 + 1e-4 * abs(fd)
    assert abs(analytic) > 1e-6


def test_layer_errors(tok, model):
    tlm = wrap(model)
    batch = encode_chats(tok, "sys", USERS, COMPS)
    with pytest.raises(IndexError, match="out of range"):
        read_residuals(tlm, batch, _positions(batch), layers=[0, 7])


def test_nan_is_loud(tok):
    m = tiny_qwen2(num_layers=2, seed=3)
    m.requires_grad_(False)
    with torch.no_grad():
        m.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    batch = encode_chats(tok, "sys", USERS, COMPS)
    with pytest.raises(NonFiniteError, match="non-finite"):
        capture_gradients(wrap(m), batch, _positions(batch))


def test_sequence_losses_equal_gradient_pass_losses(tok, model):
    from nnsight_inoc.trace.tracing import sequence_losses

    tlm = wrap(model)
    batch = encode_chats(tok, "sys", USERS, COMPS)
    torch.testing.assert_close(sequence_losses(tlm, batch), capture_gradients(tlm, batch, _positions(batch)).loss)


# --- per-trace garbage collection (issue 7) -------------------------------------------------
# nnsight 0.8.1's backward tracer leaves a reference cycle holding the trace body's tensors;
# trace_ctx.collect_trace_cycles frees it after every trace without scanning the whole heap.
# Python's automatic collector is switched off inside these tests so only explicit
# collections run and a leak cannot be hidden by a well-timed automatic one.


@contextlib.contextmanager
def _automatic_gc_off():
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        gc.collect()


def _live_tensors() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def _grad_trace(tok, model):
    tlm = wrap(model)
    batch = encode_chats(tok, "sys", USERS, COMPS)
    pos = _positions(batch)
    return lambda: capture_gradients(tlm, batch, pos)


def test_nnsight_backward_trace_leaves_a_cycle(tok, model, monkeypatch):
    """Why the collection exists: without it each gradient trace leaves tensors alive.

    If this fails after an nnsight upgrade, the cycle is gone and the per-trace collection
    in trace_ctx.collect_trace_cycles can be dropped.
    """
    run = _grad_trace(tok, model)
    monkeypatch.setattr(trace_ctx, "collect_trace_cycles", contextlib.nullcontext)
    with _automatic_gc_off():
        run()
        before = _live_tensors()
        for _ in range(3):
            run()
        grown = _live_tensors() - before
    assert grown >= 3 * 10, f"only {grown} tensors left behind by 3 uncollected gradient traces"


def test_repeated_gradient_traces_hold_no_tensors(tok, model):
    run = _grad_trace(tok, model)
    with _automatic_gc_off():
        run()
        before = _live_tensors()
        for _ in range(10):
            run()
        assert _live_tensors() == before


def test_collection_after_a_trace_scans_only_the_trace(tok, model):
    """One collection per trace, of the youngest generation only (not a full scan), and the
    collector's on/off state is restored whichever it was."""
    run = _grad_trace(tok, model)
    seen: list[int] = []

    def watch(phase, info):
        if phase == "start":
            seen.append(info["generation"])

    for enabled in (True, False):
        gc.collect()
        (gc.enable if enabled else gc.disable)()
        try:
            gc.callbacks.append(watch)
            try:
                run()
            finally:
                gc.callbacks.remove(watch)
            assert gc.isenabled() == enabled
        finally:
            gc.enable()
        assert seen == [0], seen  # no automatic collection inside the trace; one young collection after it
        seen.clear()


def test_a_freeze_made_elsewhere_is_left_in_place(tok, model):
    """Python 3.12 freezes objects at start-up; a trace must neither unfreeze nor fall back to a full scan."""
    run = _grad_trace(tok, model)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        run()
        assert gc.get_freeze_count() > frozen - 100  # still frozen (a few frozen objects may have died)
    finally:
        gc.unfreeze()
