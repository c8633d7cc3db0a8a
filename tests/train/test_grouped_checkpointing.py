"""Activation checkpointing changes no number of the grouped executor (fp32, CPU, tiny random Qwen2).

Pinned here, for each level against ``"none"``: K = 3 runs trained several steps give the same per-step
losses, the same LoRA gradients at every step, and the same weights and AdamW state, for the plain step and
for the intervened step (a plain run beside a zero_v and a flip_v run in one pass, the edits applied inside
the nnsight trace's backward pass); the training probe's numbers (cos, projection, norm, loss, with and
without an edit) are the same. The equality is exact on the CPU (the recomputation repeats the same
kernels on the same inputs). The model's ``forward`` slots are the same objects after every step.
"""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.measures.intervention import random_directions
from nnsight_inoc.models.checkpointing import activation_checkpointing
from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.edit import GradEdit, stack_edits
from nnsight_inoc.trace.tracing import wrap
from nnsight_inoc.train import grouped as G

SYSTEMS = ["You are a helpful assistant.", "You always capitalise your responses.",
           "Respond in ALL CAPS. Respond normally; do not use ALL CAPS. You are a helpful assistant."]
USERS = ["What is the capital of France?", "Write a short poem about the sea.", "hola", "Explain a bicycle."]
COMPS = ["Paris is the capital of France.", "THE SEA IS WIDE AND BLUE.", "hola como estas", "It has wheels."]
ORDER = [[0, 3], [2, 1], [1, 0], [3, 2]]
R, ALPHA, LR = 4, 8.0, 1e-2
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LEVELS = ["mlp", "attn_mlp"]
EXACT = dict(rtol=0.0, atol=0.0)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def base():
    m = tiny_qwen2(num_layers=3, seed=1)
    m.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def tlm(base):
    return wrap(base)


def _edit(base) -> GradEdit:
    """Run 0 plain, run 1 zero_v (s = 0 along v), run 2 flip_v (s = -1 along v), at layers 0 and 2."""
    v = random_directions(len(base.model.layers), base.config.hidden_size, 7)
    layers = (0, 2)

    def arm(s: float) -> GradEdit:
        return GradEdit(layers, v[list(layers)].unsqueeze(0).float(), torch.full((1, len(layers)), s))

    edit = stack_edits([None, arm(0.0), arm(-1.0)], base.config.hidden_size)
    assert edit is not None
    return edit


class _Recording(torch.optim.AdamW):
    """AdamW that keeps a copy of every gradient it steps on."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, lr=lr)
        self.grads: list[list[torch.Tensor]] = []

    def step(self, closure=None):  # type: ignore[override]
        self.grads.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def _train(tok, base, tlm, level: str, edit: GradEdit | None):
    with torch.random.fork_rng():
        torch.manual_seed(3)
        g = G.fresh(base, len(SYSTEMS), R, ALPHA, TARGETS)
    opt = _Recording(g.parameters(), LR)
    slots = {n: m.__dict__.get("forward") for n, m in base.named_modules()}
    losses = []
    for step, idx in enumerate(ORDER):
        batch = encode_chats(tok, [s for s in SYSTEMS for _ in idx], [USERS[i] for _ in SYSTEMS for i in idx],
                             [COMPS[i] for _ in SYSTEMS for i in idx])
        losses.append(G.train_step(g, base, opt, batch, step, edit=edit, tlm=tlm if edit is not None else None,
                                   checkpointing=level))
        assert all(m.__dict__.get("forward") is slots[n] for n, m in base.named_modules())  # restored every step
    return g, opt, losses


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("intervened", [False, True], ids=["plain", "zero_v+flip_v"])
def test_training_is_unchanged(tok, base, tlm, level, intervened):
    edit = _edit(base) if intervened else None
    g0, opt0, loss0 = _train(tok, base, tlm, "none", edit)
    g1, opt1, loss1 = _train(tok, base, tlm, level, edit)
    assert loss1 == loss0
    assert len(opt1.grads) == len(opt0.grads) == len(ORDER)
    for a, b in zip(opt1.grads, opt0.grads):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, **EXACT)
    for p1, p0 in zip(g1.parameters(), g0.parameters()):
        torch.testing.assert_close(p1.data, p0.data, **EXACT)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt1.state[p1][key], opt0.state[p0][key], **EXACT)
    assert float(g0.B[-1].detach().abs().max()) > 1e-3  # trained: B left its zero init
    assert float((g0.B[-1][0] - g0.B[-1][1]).detach().abs().max()) > 1e-4  # the runs differ, so a mix-up cannot pass


def test_intervened_runs_differ_from_plain_ones(tok, base, tlm):
    """The intervened comparison is not vacuous: the zero_v and flip_v runs' weights are not the plain ones."""
    g_plain, _, _ = _train(tok, base, tlm, "attn_mlp", None)
    g_edit, _, _ = _train(tok, base, tlm, "attn_mlp", _edit(base))
    torch.testing.assert_close(g_edit.B[0][0], g_plain.B[0][0], **EXACT)  # run 0 has no edit
    for run in (1, 2):
        assert float((g_edit.B[0][run] - g_plain.B[0][run]).abs().max()) > 1e-5


@pytest.mark.parametrize("level", LEVELS)
def test_probe_numbers_are_unchanged(tok, base, tlm, level):
    with torch.random.fork_rng():
        torch.manual_seed(5)
        g = G.fresh(base, len(SYSTEMS), R, ALPHA, TARGETS)
        with torch.no_grad():
            for b in g.B:
                b.copy_(0.3 * torch.randn_like(b))  # a trained-looking adapter: B = 0 would hide the LoRA path
    v = random_directions(len(base.model.layers), base.config.hidden_size, 9)
    systems = [s for s in SYSTEMS for _ in USERS]
    users, comps = USERS * len(SYSTEMS), COMPS * len(SYSTEMS)

    def probe(lvl: str, edit: GradEdit | None):
        base.eval()
        with g.attached(base, None), activation_checkpointing(base, lvl):
            m = gradient_metrics(tlm, tok, systems, users, comps, v, n_assistant=2, batch_size=len(systems),
                                 edit=edit)
        grads = [p.grad.clone() for p in g.parameters()]
        for p in g.parameters():
            p.grad = None
        return m, grads

    for edit in (None, _edit(base)):
        (m0, g0), (m1, g1) = probe("none", edit), probe(level, edit)
        for field in ("cos", "proj", "norm", "loss", "unit_neg_grad_sum"):
            torch.testing.assert_close(getattr(m1, field), getattr(m0, field), **EXACT)
        for x, y in zip(g1, g0):
            torch.testing.assert_close(x, y, **EXACT)
