"""Grouped LoRA (K runs in one pass) against real PEFT runs, one at a time, on a tiny random Qwen2.

Pinned here: the init is PEFT's bit for bit; K runs trained grouped equal the same runs trained
alone with PEFT (losses, weights, AdamW state, gradient cosines through ``capture_gradients``);
the hooks leave no trace on the model; saved runs load in plain PEFT; greedy generation with a
KV cache matches PEFT's; and bad inputs are refused.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open

from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.trace.chat import Batch, completion_ids, encode_chats, make_batch, prompt_ids
from nnsight_inoc.trace.tracing import capture_gradients, wrap
from nnsight_inoc.train import grouped as G
from nnsight_inoc.train import grouped_io as GIO

SYSTEMS = [  # three prompt lengths, so the grouped batch pads them together
    "You are a helpful assistant.",
    "You always capitalise your responses.",
    "Respond in ALL CAPS. Respond normally; do not use ALL CAPS. You are a helpful assistant.",
]
USERS = ["What is the capital of France?", "Write a short poem about the sea.", "hola", "Explain a bicycle.",
         "Give three tips for learning to cook.", "the quick brown fox"]
COMPS = ["Paris is the capital of France.", "THE SEA IS WIDE AND BLUE.", "hola como estas", "It has wheels.",
         "Cook, taste, repeat.", "jumps over the lazy dog"]
ORDER = [[0, 3], [5, 1], [2, 4], [1, 0], [3, 5]]  # 5 steps of 2 examples, as finetune.step_order would give
R, ALPHA, LR = 4, 8.0, 1e-2
TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def base():
    m = tiny_qwen2(num_layers=2, seed=1)
    m.requires_grad_(False)
    return m


def _lcfg(targets: list[str] = TARGETS) -> LoraConfig:
    return LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=list(targets), task_type="CAUSAL_LM")


def _peft_model(base, seed: int, targets: list[str] = TARGETS) -> PeftModel:
    """What finetune.make_lora_model does: get_peft_model on a deep copy, seeded, LoRA weights fp32."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pm = get_peft_model(copy.deepcopy(base), _lcfg(targets))
    for n, p in pm.named_parameters():
        p.requires_grad_("lora_" in n)
    return pm


def _peft_weight(pm: PeftModel, module: str, which: str) -> torch.nn.Parameter:
    return getattr(pm.get_submodule(f"base_model.model.{module}"), f"lora_{which}")["default"].weight


def _peft_with(base, grouped: G.GroupedLora, k: int) -> PeftModel:
    """A PEFT model holding slot k's weights, copied in by module name (independent of save_peft)."""
    pm = _peft_model(base, 0, grouped.target_modules)
    with torch.no_grad():
        for name, (a, b) in grouped.slot(k).items():
            _peft_weight(pm, name, "A").copy_(a)
            _peft_weight(pm, name, "B").copy_(b)
    return pm.eval()


def _grouped_batch(tok, systems: list[str], users: list[str], comps: list[str] | None) -> Batch:
    """Row block k = the examples under systems[k], left-padded together."""
    p = [prompt_ids(tok, s, u) for s in systems for u in users]
    c = None if comps is None else [completion_ids(tok, x) for _ in systems for x in comps]
    return make_batch(p, c, int(tok.pad_token_id), padding_side="left")


def _ref_loss(model, batch: Batch) -> torch.Tensor:
    """The slow obvious loss: per row, mean CE over its completion targets; then the mean over rows."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=batch.position_ids).logits
    per = []
    for i in range(batch.size):
        m = batch.target_mask[i]
        per.append(torch.nn.functional.cross_entropy(logits[i][m], batch.input_ids[i].roll(-1)[m]))
    return torch.stack(per).mean()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b|."""
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _randomised(base, k: int, seed: int = 0) -> G.GroupedLora:
    """A grouped LoRA whose K slots all differ and whose B is nonzero (a fresh B=0 adapter is a no-op)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        g = G.fresh(base, k, R, ALPHA, TARGETS)
        with torch.no_grad():
            for a, b in zip(g.A, g.B):
                a.add_(0.3 * torch.randn_like(a))
                b.copy_(0.5 * torch.randn_like(b))
    return g


def _unpadded(logits: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    return [logits[i][mask[i].bool()] for i in range(logits.shape[0])]


# --------------------------------------------------------------------------- init


@pytest.mark.parametrize("seed", [0, 1, 1234])
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], TARGETS, ["gate_proj", "k_proj", "lm_head"]])
def test_init_equals_peft_bitwise(base, seed, targets):
    before = {n: t.clone() for n, t in base.state_dict().items()}
    pm = _peft_model(base, seed, targets)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        g = G.fresh(base, 3, R, ALPHA, targets)
        after_grouped = torch.rand(4)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        get_peft_model(copy.deepcopy(base), _lcfg(targets))
        after_peft = torch.rand(4)
    assert torch.equal(after_grouped, after_peft)  # the RNG is left where PEFT leaves it
    peft_names = [n[len("base_model.model."):] for n, m in pm.named_modules()
                  if n.startswith("base_model.model.") and hasattr(m, "lora_A")]
    assert g.names == peft_names
    for name in g.names:
        for k in range(3):
            assert torch.equal(g.slot(k)[name][0], _peft_weight(pm, name, "A").float())
            assert torch.equal(g.slot(k)[name][1], _peft_weight(pm, name, "B").float())
    assert all(torch.equal(t, before[n]) for n, t in base.state_dict().items())


def test_init_equals_peft_on_bf16_base():
    """PEFT casts the fresh adapter through the base dtype and back to fp32; so must we."""
    b16 = tiny_qwen2(num_layers=2, seed=1, dtype=torch.bfloat16)
    b16.requires_grad_(False)
    pm = _peft_model(b16, 5)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        g = G.fresh(b16, 2, R, ALPHA, TARGETS)
    for name in g.names:
        peft_a = _peft_weight(pm, name, "A")
        assert peft_a.dtype == torch.float32 and torch.equal(g.slot(1)[name][0], peft_a)


# --------------------------------------------------------------------------- training equivalence


def _train_alone(tok, base, system: str, seed: int) -> tuple[PeftModel, list[float], torch.optim.AdamW]:
    pm = _peft_model(base, seed).train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR)
    losses = []
    for idx in ORDER:
        batch = encode_chats(tok, system, [USERS[i] for i in idx], [COMPS[i] for i in idx])
        opt.zero_grad(set_to_none=True)
        loss = _ref_loss(pm, batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return pm.eval(), losses, opt


def _cos(grads: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B, L, P) cosines of (B, L, P, d) gradients with a (L, d) direction."""
    return torch.nn.functional.cosine_similarity(grads, u[None, :, None, :], dim=-1)


def test_grouped_training_equals_separate_peft_runs(tok, base):
    seed = 3
    before = {n: t.clone() for n, t in base.state_dict().items()}
    alone = [_train_alone(tok, base, s, seed) for s in SYSTEMS]

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        g = G.fresh(base, len(SYSTEMS), R, ALPHA, TARGETS)
    opt = torch.optim.AdamW(g.parameters(), lr=LR)
    losses = []
    for step, idx in enumerate(ORDER):
        batch = _grouped_batch(tok, SYSTEMS, [USERS[i] for i in idx], [COMPS[i] for i in idx])
        losses.append(G.train_step(g, base, opt, batch, step))
    assert not base.training  # train_step restores the shared base's mode

    # Measured on this tiny model (fp32, CPU, 2 threads), max over runs, steps and weights:
    # losses rel 1.6e-7, weights rel 7.5e-6 (AdamW's first updates of A are about lr * sign(g), so
    # round-off in tiny gradients shows up), AdamW exp_avg rel 1.3e-6 and exp_avg_sq rel 2.1e-6,
    # probe cosines abs 4.5e-8, probe losses rel 0. Pinned at about 7-20x those. Between runs the
    # same quantities differ by far more (weights rel 0.3-2, cosines 5e-3, losses 4e-3 abs), so
    # a slot mix-up cannot pass.
    grouped_losses = torch.tensor(losses).T  # (K, steps)
    alone_losses = torch.tensor([a[1] for a in alone])
    assert _rel(grouped_losses, alone_losses) < 2e-6
    assert float((alone_losses[0] - alone_losses[1]).abs().max()) > 1e-4  # the prompts really differ
    for k, (pm, _, opt_k) in enumerate(alone):
        for i, name in enumerate(g.names):
            for stacked, which in ((g.A[i], "A"), (g.B[i], "B")):
                p = _peft_weight(pm, name, which)
                assert _rel(stacked.data[k], p.data) < 5e-5
                assert _rel(stacked.data[(k + 1) % 3], p.data) > 1e-2
                s_state, p_state = opt.state[stacked], opt_k.state[p]
                assert float(s_state["step"]) == float(p_state["step"]) == len(ORDER)
                assert _rel(s_state["exp_avg"][k], p_state["exp_avg"]) < 2e-5
                assert _rel(s_state["exp_avg_sq"][k], p_state["exp_avg_sq"]) < 2e-5
            assert float(_peft_weight(pm, name, "B").detach().abs().max()) > 1e-3  # B moved away from its zero init
    assert all(torch.equal(t, before[n]) for n, t in base.state_dict().items())

    # gradient cosines with a fixed random unit direction, through tracing.capture_gradients
    users, comps = USERS[:3], COMPS[:3]
    gen = torch.Generator().manual_seed(11)
    u = torch.nn.functional.normalize(torch.randn(len(base.model.layers), base.config.hidden_size,
                                                  generator=gen), dim=-1)
    gb = _grouped_batch(tok, SYSTEMS, users, comps)
    gidx = torch.cat([gb.final_prompt_idx[:, None], gb.assistant_idx[:, :2]], dim=1)
    with g.attached(base, len(users)):
        res = capture_gradients(wrap(base), gb, gidx)  # one trace over all K row groups
    assert all(p.grad is not None and float(p.grad.abs().max()) > 0 for p in g.parameters())  # hooks ran in it
    cos_grouped = _cos(res.grads, u).reshape(len(SYSTEMS), len(users), *res.grads.shape[1:3])
    loss_grouped = res.loss.reshape(len(SYSTEMS), len(users))
    for k, (pm, _, _) in enumerate(alone):
        b = encode_chats(tok, SYSTEMS[k], users, comps)
        ref = capture_gradients(wrap(pm), b, torch.cat([b.final_prompt_idx[:, None], b.assistant_idx[:, :2]], 1))
        assert float((cos_grouped[k] - _cos(ref.grads, u)).abs().max()) < 1e-6
        assert _rel(loss_grouped[k], ref.loss) < 1e-6
    assert float((cos_grouped[0] - cos_grouped[1]).abs().max()) > 1e-3


def test_adamw_over_stacked_slots_equals_separate_optimisers():
    """AdamW is elementwise: one optimiser over (K, ...) tensors = K optimisers, bit for bit."""
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(3, 4, 5, generator=gen)
    stacked = torch.nn.Parameter(init.clone())
    alone = [torch.nn.Parameter(init[k].clone()) for k in range(3)]
    o_s = torch.optim.AdamW([stacked], lr=0.1)
    o_a = [torch.optim.AdamW([p], lr=0.1) for p in alone]
    for _ in range(4):
        grad = torch.randn(3, 4, 5, generator=gen)
        stacked.grad = grad.clone()
        o_s.step()
        for k, (p, o) in enumerate(zip(alone, o_a)):
            p.grad = grad[k].clone()
            o.step()
    for k, (p, o) in enumerate(zip(alone, o_a)):
        assert torch.equal(stacked.data[k], p.data)
        assert torch.equal(o_s.state[stacked]["exp_avg_sq"][k], o.state[p]["exp_avg_sq"])


# --------------------------------------------------------------------------- hooks


def test_hooks_are_gone_after_the_context(tok, base):
    g = _randomised(base, 3)
    batch = _grouped_batch(tok, SYSTEMS, USERS[:2], COMPS[:2])
    kw = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
    hooks_before = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in base.named_modules()}
    with torch.no_grad():
        plain = base(**kw).logits
        with g.attached(base, 2):
            hooked = base(**kw).logits
        with pytest.raises(RuntimeError, match="boom"), g.attached(base, 2):
            raise RuntimeError("boom")
        after = base(**kw).logits
    assert float((hooked - plain).abs().max()) > 1e-3  # the adapters did act inside
    assert torch.equal(after, plain)
    assert {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in base.named_modules()} == hooks_before
    assert all(len(base.get_submodule(n)._forward_hooks) == 0 for n in g.names)


def test_grouped_logits_equal_peft_per_slot(tok, base):
    g = _randomised(base, 3)
    batch = _grouped_batch(tok, SYSTEMS, USERS[:2], COMPS[:2])
    with torch.no_grad(), g.attached(base, 2):
        logits = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids).logits
    rows = _unpadded(logits, batch.attention_mask)
    for k in range(3):
        b = encode_chats(tok, SYSTEMS[k], USERS[:2], COMPS[:2])
        with torch.no_grad():
            ref = _peft_with(base, g, k)(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                         position_ids=b.position_ids).logits
        for i, want in enumerate(_unpadded(ref, b.attention_mask)):
            assert _rel(rows[2 * k + i], want) < 1e-5  # measured 6.2e-7 (padding differs per batch)


# --------------------------------------------------------------------------- save / load


def test_save_peft_loads_in_plain_peft(tok, base, tmp_path):
    g = _randomised(base, 3)
    batch = _grouped_batch(tok, SYSTEMS, USERS[:2], COMPS[:2])
    with torch.no_grad(), g.attached(base, 2):
        rows = _unpadded(base(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              position_ids=batch.position_ids).logits, batch.attention_mask)
    base_dir = str(tmp_path / "base")  # a local base config: PEFT would otherwise look the name up online
    base.config.save_pretrained(base_dir)
    folders = []
    for k in range(3):
        folder = GIO.save_peft(g, k, tmp_path / f"run{k}", base_dir)
        folders.append(folder)
        assert sorted(p.name for p in folder.iterdir()) == [GIO.CONFIG_NAME, GIO.WEIGHTS_NAME]
        pm = PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).eval()
        b = encode_chats(tok, SYSTEMS[k], USERS[:2], COMPS[:2])
        with torch.no_grad():
            ref = pm(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids).logits
        for i, want in enumerate(_unpadded(ref, b.attention_mask)):
            assert _rel(rows[2 * k + i], want) < 1e-5  # measured 6.2e-7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "run0", "run1", "run2"]  # no temp folder left
    GIO.save_peft(g, 1, folders[1], base_dir)  # overwriting a finished run is atomic too

    # same config fields, keys and metadata as PEFT's own save_pretrained
    own = _peft_with(base, g, 1)
    own.peft_config["default"].base_model_name_or_path = base_dir
    own.save_pretrained(str(tmp_path / "peft_own"))
    theirs = json.loads((tmp_path / "peft_own" / GIO.CONFIG_NAME).read_text())
    assert json.loads((folders[1] / GIO.CONFIG_NAME).read_text()) == theirs
    with safe_open(str(tmp_path / "peft_own" / GIO.WEIGHTS_NAME), "pt") as f_theirs, \
            safe_open(str(folders[1] / GIO.WEIGHTS_NAME), "pt") as f_ours:
        assert f_ours.metadata() == f_theirs.metadata()
        assert sorted(f_ours.keys()) == sorted(f_theirs.keys())
        names = f_theirs.keys()  # safe_open handles are not dicts
        assert all(torch.equal(f_ours.get_tensor(k), f_theirs.get_tensor(k)) for k in names)

    back = GIO.load_peft(folders, base)
    assert back.names == g.names and back.k == 3 and back.scale == g.scale
    assert all(torch.equal(x, y) for x, y in zip(back.parameters(), g.parameters()))
    assert not any(p.requires_grad for p in back.parameters())


def test_load_peft_refuses_mismatched_runs(base, tmp_path):
    g = _randomised(base, 1)
    GIO.save_peft(g, 0, tmp_path / "a", None)
    with torch.random.fork_rng():
        other = G.fresh(base, 1, R + 1, ALPHA, TARGETS)
    GIO.save_peft(other, 0, tmp_path / "b", None)
    with pytest.raises(ValueError, match="r=5 differs"):
        GIO.load_peft([tmp_path / "a", tmp_path / "b"], base)
    cfg = json.loads((tmp_path / "a" / GIO.CONFIG_NAME).read_text())
    cfg["use_rslora"] = True
    (tmp_path / "a" / GIO.CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_rslora"):
        GIO.load_peft([tmp_path / "a"], base)


# --------------------------------------------------------------------------- generation


def test_greedy_generate_with_kv_cache_equals_peft(tok, base):
    g = _randomised(base, 3, seed=4)
    users = USERS[:2]
    p = [prompt_ids(tok, s, u) for s in SYSTEMS for u in users]
    batch = make_batch(p, None, int(tok.pad_token_id), padding_side="left")
    greedy = {"max_new_tokens": 8, "do_sample": False, "temperature": None, "top_p": None, "top_k": None,
              "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    with torch.no_grad(), g.attached(base, len(users)):
        out = base.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **greedy)
    new = out[:, batch.input_ids.shape[1]:]
    assert new.shape[1] > 1  # incremental (T=1) steps did run
    seen = set()
    for k in range(3):
        b = encode_chats(tok, SYSTEMS[k], users)
        with torch.no_grad():
            ref = _peft_with(base, g, k).generate(input_ids=b.input_ids, attention_mask=b.attention_mask, **greedy)
        ref_new = ref[:, b.input_ids.shape[1]:]
        assert torch.equal(new[2 * k : 2 * k + 2, : ref_new.shape[1]], ref_new)
        seen.add(tuple(ref_new[0].tolist()))
    assert len(seen) > 1  # the slots generate differently, so a slot mix-up would show


# --------------------------------------------------------------------------- errors


def test_refuses_bad_inputs(tok, base):
    g = _randomised(base, 3)
    batch = _grouped_batch(tok, SYSTEMS[:2], USERS[:2], COMPS[:2])  # 4 rows, not 3 x 2
    with pytest.raises(ValueError, match="expects K x rows_per_group = 3 x 2 = 6"), torch.no_grad(), \
            g.attached(base, 2):
        base(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    with pytest.raises(ValueError, match="expects K x rows_per_group"), g.attached(base, 2):  # inside a trace too
        capture_gradients(wrap(base), batch, batch.final_prompt_idx[:, None])
    assert all(len(base.get_submodule(n)._forward_hooks) == 0 for n in g.names)
    with pytest.raises(ValueError, match="lora_dropout=0.05"):
        G.fresh(base, 3, R, ALPHA, TARGETS, dropout=0.05)
    g.dropout = 0.1  # as loaded from a run trained with dropout: fine in eval mode, refused in training
    three = _grouped_batch(tok, SYSTEMS, USERS[:1], None)
    with torch.no_grad(), g.attached(base, 1):
        base(input_ids=three.input_ids, attention_mask=three.attention_mask)
    with pytest.raises(ValueError, match="lora_dropout=0.1 cannot be applied"), g.attached(base, 1):
        base.train()
        try:
            base(input_ids=three.input_ids, attention_mask=three.attention_mask)
        finally:
            base.eval()
    with pytest.raises(ValueError, match="matched no module"):
        G.fresh(base, 3, R, ALPHA, ["query_key_value"])
    with pytest.raises(ValueError, match="non-empty list"):
        G.fresh(base, 3, R, ALPHA, "q_proj")
    with pytest.raises(ValueError, match="Embedding"):
        G.fresh(base, 3, R, ALPHA, ["embed_tokens"])
    with pytest.raises(RuntimeError, match="already attached"), g.attached(base, 2), g.attached(base, 2):
        pass


def test_non_finite_names_run_and_module(base):
    g = _randomised(base, 3)
    losses = torch.tensor([0.5, 0.7, 0.9])
    for p in g.parameters():
        p.grad = torch.zeros_like(p)
    assert G.check_step(g, losses, 0) == pytest.approx([0.5, 0.7, 0.9])
    g.B[3].grad[2, 0, 0] = float("nan")
    with pytest.raises(G.NonFiniteRunError, match=f"step 4: run 2, module {g.names[3]}: non-finite lora_B"):
        G.check_step(g, losses, 4)
    g.B[3].grad.zero_()
    g.A[1].grad[0] = 1e30  # finite elements whose norm overflows float32
    with pytest.raises(G.NonFiniteRunError, match=f"run 0, module {g.names[1]}: lora_A gradient norm overflowed"):
        G.check_step(g, losses, 1)
    g.A[1].grad.zero_()
    with pytest.raises(G.NonFiniteRunError, match="run 1 has non-finite training loss"):
        G.check_step(g, torch.tensor([0.5, math.inf, 0.9]), 2)
    g.A[0].grad = None
    with pytest.raises(RuntimeError, match="no gradient reached"):
        G.check_step(g, losses, 3)


def test_nnsight_trace_sees_updates_downstream_not_at_the_target(tok, base):
    """nnsight reads a module's .output before hooks added after wrapping: the target Linear's own
    .output is the base one, the decoder layer's output has the update (what the probes read)."""
    import nnsight

    g = _randomised(base, 2)
    batch = _grouped_batch(tok, SYSTEMS[:2], USERS[:1], None)
    tlm = wrap(base)

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), tlm.envoy.trace(input_ids=batch.input_ids, attention_mask=batch.attention_mask):
            q = nnsight.save(tlm.envoy.model.layers[0].self_attn.q_proj.output)
            h = nnsight.save(tlm.envoy.model.layers[0].output)
        return q, (h[0] if isinstance(h, tuple) else h)

    q0, h0 = read()
    with g.attached(base, 1):
        q1, h1 = read()
    assert torch.equal(q0, q1)
    assert float((h1 - h0).abs().max()) > 1e-3
