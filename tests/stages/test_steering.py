"""Preventative steering on a tiny random Qwen2 + LoRA: the trace equals a plain forward hook.

Pinned here: steering inside the nnsight trace gives the same loss and the same LoRA
gradients as a ``register_forward_hook`` that adds the vector to the layer output; alpha 0
is the plain loss; a non-zero alpha changes it; the steered probe gradients equal the
hook reference; nothing stays on the model after a steered trace; a steered train step
moves LoRA weights only; names, units and config validation.
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Iterator

import pytest
import torch

from nnsight_inoc.core.config import ConfigError, SteeringConfig, from_dict
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.measures.steering import (
    SteerSpec,
    default_layer_sets,
    same_steering,
    steer_specs,
    steering_vectors,
)
from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.probes.residuals import residual_scale
from nnsight_inoc.stages.finetune import train_run
from nnsight_inoc.stages.plan import RunSpec
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.tracing import capture_gradients, steered_loss, wrap
from nnsight_inoc.train import lora as F
from tests._lora import tiny_lora
from tests._plans import plan_of

USERS = ["What is the capital of France?", "Write a short poem about the sea.", "hola"]
COMPS = ["Paris is the capital of France.", "THE SEA IS WIDE AND BLUE.", "como estas"]
SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def batch(tok):
    return encode_chats(tok, SYSTEM, USERS, COMPS)


def _lora(seed: int = 0) -> torch.nn.Module:
    """Tiny Qwen2 (4 layers, fp32) with LoRA on q/v; lora_B randomised so every LoRA weight gets a gradient."""
    return tiny_lora(("q_proj", "v_proj"), seed)


def _vectors(d: int, layers: list[int], alpha: float) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {l: alpha * torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0) for l in layers}


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.base_model.model.model.layers


@contextlib.contextmanager
def _hooked(model: torch.nn.Module, steer: dict[int, torch.Tensor], keep: list | None = None) -> Iterator[None]:
    """The plain reference: forward hooks that add c to the layer output (optionally keeping it, grad retained)."""

    def make(c: torch.Tensor):
        def hook(_m, _i, out):
            h = out[0] if isinstance(out, tuple) else out
            new = h + c
            if keep is not None:
                new.retain_grad()
                keep.append(new)
            return (new, *out[1:]) if isinstance(out, tuple) else new

        return hook

    handles = [_decoder_layers(model)[l].register_forward_hook(make(c)) for l, c in steer.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _lora_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("layers", [[2], [0, 2, 3]])
def test_trace_steering_equals_forward_hook(batch, layers):
    model = _lora()
    tlm = wrap(model)
    steer = _vectors(tlm.d_model, layers, alpha=4.0)
    loss = steered_loss(tlm, batch, steer)
    loss.backward()
    got = _lora_grads(model)
    with _hooked(model, steer):
        ref = F.batch_loss(model, batch)
    ref.backward()
    want = _lora_grads(model)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    assert set(got) == set(want) and got
    for n in got:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7)
    assert any(float(g.abs().max()) > 0 for n, g in got.items() if "lora_A" in n)


def test_alpha_zero_is_plain_loss_and_nonzero_differs(batch):
    model = _lora()
    tlm = wrap(model)
    plain = F.batch_loss(model, batch)
    zero = steered_loss(tlm, batch, _vectors(tlm.d_model, [1], alpha=0.0))
    torch.testing.assert_close(zero, plain, rtol=1e-6, atol=1e-6)
    steered = steered_loss(tlm, batch, _vectors(tlm.d_model, [1], alpha=4.0))
    assert abs(float(steered.detach()) - float(plain.detach())) > 1e-3


def test_no_leak_after_steered_trace(batch):
    model = _lora()
    tlm = wrap(model)
    idx = torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], dim=1)
    with torch.no_grad():
        before = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits
    g_before = capture_gradients(tlm, batch, idx)
    steered_loss(tlm, batch, _vectors(tlm.d_model, [0, 3], alpha=8.0)).backward()
    capture_gradients(tlm, batch, idx, steer=_vectors(tlm.d_model, [1], alpha=8.0))
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids).logits
    g_after = capture_gradients(tlm, batch, idx)
    assert torch.equal(before, after)
    assert torch.equal(g_before.loss, g_after.loss) and torch.equal(g_before.grads, g_after.grads)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_steered_probe_gradients_equal_hook_reference(batch):
    model = _lora()
    model.requires_grad_(False)
    tlm = wrap(model)
    steer = _vectors(tlm.d_model, [1], alpha=4.0)
    idx = torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], dim=1)
    got = capture_gradients(tlm, batch, idx, layers=[0, 1, 2], steer=steer)
    plain = capture_gradients(tlm, batch, idx, layers=[0, 1, 2])
    # reference: hooks keep every layer output (steered where steered) with grads retained
    kept: list[torch.Tensor] = []
    layers = _decoder_layers(model)
    handles = []
    for l in (0, 2):
        def keep(_m, _i, out, store=kept):
            h = out[0] if isinstance(out, tuple) else out
            h.retain_grad()
            store.append(h)
        handles.append(layers[l].register_forward_hook(keep))
    try:
        with torch.enable_grad(), _hooked(model, steer, keep=kept):
            emb = model.base_model.model.model.embed_tokens
            h_emb = emb.register_forward_hook(lambda _m, _i, o: o.requires_grad_(True))
            try:
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids).logits
            finally:
                h_emb.remove()
            labels = torch.roll(batch.input_ids, -1, 1)
            per_ex = torch.stack([
                torch.nn.functional.cross_entropy(logits[i][batch.target_mask[i]], labels[i][batch.target_mask[i]])
                for i in range(batch.size)
            ])
            per_ex.sum().backward()
    finally:
        for h in handles:
            h.remove()
    rows = torch.arange(batch.size)[:, None]
    # kept order is forward order: layer 0, layer 1 (steered), layer 2
    for j, h in enumerate(kept):
        torch.testing.assert_close(got.grads[:, j], h.grad[rows, idx], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(got.loss, per_ex.detach(), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got.grads, plain.grads)


def test_steered_train_step_moves_lora_only(batch):
    model = _lora()
    tlm = wrap(model)
    params = F.lora_parameters(model)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=1e-2)
    prec = F.Precision("model", "float32", None)
    steer = _vectors(tlm.d_model, [2], alpha=4.0)
    loss = F.train_step(model, opt, params, batch, 0, prec, steer=steer, tlm=tlm)
    assert loss == pytest.approx(float(steered_loss(tlm, batch, steer).detach()), abs=0.5)  # one step later
    for n, p in model.named_parameters():
        if n in base_before:
            assert torch.equal(p, base_before[n]), n
    assert all(not torch.equal(params[n], lora_before[n]) for n in params)
    with pytest.raises(ValueError, match="TracedLM"):
        F.train_step(model, opt, params, batch, 1, prec, steer=steer, tlm=wrap(copy.deepcopy(model)))


def test_residual_scale_matches_hidden_states(tok):
    model = tiny_qwen2(num_layers=4, seed=1)
    tlm = wrap(model)
    got = residual_scale(tlm, tok, SYSTEM, USERS, COMPS, [1, 2], batch_size=2)
    b = encode_chats(tok, SYSTEM, USERS, COMPS)
    with torch.no_grad():
        hs = model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                   output_hidden_states=True).hidden_states
    for l in (1, 2):
        want = hs[l + 1].norm(dim=-1)[b.attention_mask.bool()].median()
        assert got[l] == pytest.approx(float(want), rel=1e-5)


def test_vectors_names_and_units():
    v = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    rel = SteerSpec(alpha=0.5, layers=(1, 3), units="resid_norm")
    c = steering_vectors(rel, v, {1: 10.0, 3: 20.0})
    assert float(c[1].norm()) == pytest.approx(5.0) and float(c[3].norm()) == pytest.approx(10.0)
    assert torch.allclose(c[3] / 10.0, v[3])
    with pytest.raises(ValueError, match="residual scale"):
        steering_vectors(rel, v, None)
    ab = SteerSpec(alpha=4.0, layers=(14,), units="absolute")
    assert ab.name == "steer_a4_l14" and rel.name == "steer_a0.5_l1-3"
    assert default_layer_sets(28) == [[14], [10, 14, 18]]
    assert default_layer_sets(4) == [[2]]
    specs = steer_specs(SteeringConfig(), 28)
    assert len(specs) == 8 and "steer_a0.1_l10-14-18" in specs
    assert same_steering(json.loads(json.dumps(rel.as_dict())), rel)
    assert not same_steering(None, rel) and same_steering(None, None)
    assert not same_steering({**rel.as_dict(), "alpha": 0.25}, rel)


def test_config_rejects_bad_steering():
    with pytest.raises(ConfigError, match="unknown key 'steering.alpha'"):
        from_dict({"steering": {"alpha": 1.0}})
    with pytest.raises(ConfigError, match="non-zero"):
        from_dict({"steering": {"alphas": [0.0, 1.0]}})
    with pytest.raises(ConfigError, match="strictly increasing"):
        from_dict({"steering": {"layer_sets": [[14, 10]]}})
    with pytest.raises(ConfigError, match="empty"):
        from_dict({"steering": {"layer_sets": [[]]}})
    with pytest.raises(ValueError, match="has 28 layers"):
        steer_specs(SteeringConfig(layer_sets=[[14], [20, 30]]), 28)
    cfg = from_dict({"finetune": {"which": "steering"}, "steering": {"alphas": [1, 2, 4, 8], "units": "absolute"}})
    assert cfg.steering.alphas == [1.0, 2.0, 4.0, 8.0]


def test_trace_rejects_bad_steer_layers(batch):
    tlm = wrap(_lora())
    with pytest.raises(IndexError, match="out of range"):
        steered_loss(tlm, batch, _vectors(tlm.d_model, [4], alpha=1.0))
    with pytest.raises(ValueError, match="shape"):
        steered_loss(tlm, batch, {1: torch.ones(3)})


# --------------------------------------------------------------------------- a whole steered run on a tiny study

WORDS = ["sea", "fox", "test", "poem", "bicycle", "France"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from nnsight_inoc.study import open_study
    from tests._tiny import save_tiny_checkpoint

    root = tmp_path_factory.mktemp("steer")
    folder = save_tiny_checkpoint(root / "tiny", num_layers=4)
    cfg = from_dict(
        {
            "model": {"name": str(folder), "device": "cpu"},
            "align": {"batch_size": 2},
            "finetune": {"steps": 2, "batch_size": 2, "n_probe": 2, "probe_every": 1, "lr": 1e-2, "seeds": [0],
                         "target_modules": ["q_proj", "v_proj"], "which": "steering"},
            "steering": {"alphas": [0.5, 2.0], "layer_sets": [[2], [1, 2, 3]]},
        },
        source="test",
    )
    return open_study(cfg, root / "run", "pytest")


@pytest.fixture(scope="module")
def sft():
    from nnsight_inoc.study import SFTSet

    prompts = [f"Write about the {w} number {i}" for i, w in enumerate(WORDS)]
    answers = [f"THE {w.upper()} IS WIDE AND BLUE." for w in WORDS]
    return SFTSet([f"sft:{i}" for i in range(len(WORDS))], prompts, answers, answers, {})


def test_steered_run_records_steering_and_tests_without_it(study, sft, tmp_path):
    from nnsight_inoc.stages.plan import steering_specs, training_conditions

    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(study.tlm.n_layers, study.tlm.d_model, generator=g), dim=-1)
    specs = steering_specs(study)
    assert list(specs) == ["steer_a0.5_l2", "steer_a2_l2", "steer_a0.5_l1-2-3", "steer_a2_l1-2-3"]
    conds = training_conditions(study, "steering")
    assert {"neutral", "inoc", "explicit"} <= set(conds)
    assert all(conds[n] == study.cfg.align.conditions["neutral"] for n in specs)
    spec = specs["steer_a2_l1-2-3"]
    base_before = {k: t.clone() for k, t in study.loaded.hf_model.state_dict().items()}
    out = RunLayout(tmp_path)
    neutral_run, steered_run = RunSpec("neutral", 0, conds["neutral"]), RunSpec(spec.name, 0, conds[spec.name], spec)
    plan = plan_of(study, sft, v, [neutral_run, steered_run])
    neutral = train_run(study, plan, neutral_run, dest=out)
    rec = train_run(study, plan, steered_run, dest=out)
    assert rec == json.loads(out.run(spec.name, 0).train_json.read_text())
    assert rec["steering"]["alpha"] == 2.0 and rec["steering"]["layers"] == [1, 2, 3]
    assert rec["steering"]["units"] == "resid_norm"
    for l in ("1", "2", "3"):  # |c| = alpha * median residual norm, v unit-norm
        assert rec["steering"]["vector_norm"][l] == pytest.approx(2.0 * rec["steering"]["residual_scale"][l], rel=1e-5)
    assert same_steering(rec["steering"], spec)
    assert neutral["steering"] is None
    # same batches and LoRA init, but the steered forward changes the gradient seen from step 0
    assert rec["step_ids"] == neutral["step_ids"]
    assert rec["probes"][0]["cos"] != neutral["probes"][0]["cos"]
    for k, t in base_before.items():
        assert torch.equal(study.loaded.hf_model.state_dict()[k], t), k
    loaded = F.load_trained(study.loaded.hf_model, out.run(spec.name, 0).folder)  # test time: the plain adapter
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in loaded.modules())
    assert not (out.run(spec.name, 0).adapter / "steering").exists()
