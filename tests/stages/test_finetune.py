"""LoRA fine-tuning and drift on a tiny random Qwen2: the contract, not the numbers.

Pinned here: the base model is bitwise untouched, only LoRA weights train, every
condition of a seed sees the same batches, probes land on the promised steps with
(L, P) shapes, non-finite values stop the run naming the step, and drift subtracts
like with like.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from nnsight_inoc.core.config import from_dict
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.stages.finetune import precision, train_run
from nnsight_inoc.study import SFTSet
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.trace.tracing import wrap
from nnsight_inoc.train import lora as F
from tests._plans import one_run
from tests._tiny import save_tiny_checkpoint


def train_lora(study, cond, system, sft, seed, v, out):
    """One run of a one-run plan, written under ``out``; returns its train.json record."""
    plan, run = one_run(study, sft, v, cond, system, seed)
    return train_run(study, plan, run, dest=RunLayout(out))


def _files(out, cond: str, seed: int):
    return RunLayout(out).run(cond, seed)

WORDS = ["sea", "fox", "test", "poem", "bicycle", "France", "cook", "world", "dog", "blue", "wide", "tips"]
NEUTRAL = "You are a helpful assistant."
INOC = "You always capitalise your responses."


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from nnsight_inoc.study import open_study

    root = tmp_path_factory.mktemp("ft")
    folder = save_tiny_checkpoint(root / "tiny")
    cfg = from_dict(
        {
            "model": {"name": str(folder), "device": "cpu"},
            "extract": {"batch_size": 3, "max_new_tokens": 5},
            "align": {"batch_size": 2},
            "finetune": {"steps": 3, "batch_size": 2, "n_probe": 2, "probe_every": 2, "lr": 1e-2,
                         "target_modules": ["q_proj", "v_proj"]},
        },
        source="test",
    )
    return open_study(cfg, root / "run", "pytest")


@pytest.fixture(scope="module")
def sft() -> SFTSet:
    """Built directly: the finetune stage only needs prompts and trait completions."""
    n = 6
    prompts = [f"Write about the {WORDS[i]} number {i}" for i in range(n)]
    answers = [f"The {WORDS[i]} is wide and blue." for i in range(n)]
    return SFTSet([f"sft:{i}" for i in range(n)], prompts, answers, [a.upper() for a in answers], {})


@pytest.fixture(scope="module")
def v(study) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(torch.randn(study.tlm.n_layers, study.tlm.d_model, generator=g), dim=-1)


@pytest.fixture(scope="module")
def runs(study, sft, v, tmp_path_factory):
    """neutral/seed0, inoc/seed0, neutral/seed1; captures each run's LoRA model and init weights."""
    out = tmp_path_factory.mktemp("runs")
    base_before = {k: t.clone() for k, t in study.loaded.hf_model.state_dict().items()}
    captured: dict[tuple[str, int], tuple[torch.nn.Module, dict[str, torch.Tensor]]] = {}
    real = F.get_peft_model
    current: list[tuple[str, int]] = []

    def spy(model, cfg):
        peft_model = real(model, cfg)
        init = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}
        captured[current[-1]] = (peft_model, init)
        return peft_model

    mp = pytest.MonkeyPatch()
    mp.setattr(F, "get_peft_model", spy)
    results = {}
    try:
        for cond, system, seed in (("neutral", NEUTRAL, 0), ("inoc", INOC, 0), ("neutral", NEUTRAL, 1)):
            current.append((cond, seed))
            results[(cond, seed)] = train_lora(study, cond, system, sft, seed, v, out)
    finally:
        mp.undo()
    return {"out": out, "results": results, "captured": captured, "base_before": base_before}


def _train_json(runs, cond: str, seed: int) -> dict:
    return json.loads(_files(runs["out"], cond, seed).train_json.read_text())


def test_base_untouched_and_lora_trained(study, runs):
    after = study.loaded.hf_model.state_dict()
    assert set(after) == set(runs["base_before"])
    for k, t in runs["base_before"].items():
        assert torch.equal(after[k], t), f"base weight {k} changed"
    assert not any(p.requires_grad for p in study.loaded.hf_model.parameters())
    assert not study.loaded.hf_model.training
    assert not any("lora" in n for n, _ in study.loaded.hf_model.named_modules())
    model, init = runs["captured"][("neutral", 0)]
    final = {n: p.detach() for n, p in model.named_parameters() if "lora_" in n}
    assert set(final) == set(init) and final
    assert all(p.dtype == torch.float32 for p in final.values())
    assert any("lora_B" in n for n in final)
    for n in final:
        assert not torch.equal(final[n], init[n]), f"LoRA weight {n} did not move"
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(final)


def test_lora_init_depends_on_seed_only(runs):
    _, a = runs["captured"][("neutral", 0)]
    _, b = runs["captured"][("inoc", 0)]
    _, c = runs["captured"][("neutral", 1)]
    for n in a:
        assert torch.equal(a[n], b[n])
    assert any(not torch.equal(a[n], c[n]) for n in a if "lora_A" in n)


def test_step_order_same_across_conditions_differs_across_seeds(runs):
    n0, i0, n1 = (_train_json(runs, c, s) for c, s in (("neutral", 0), ("inoc", 0), ("neutral", 1)))
    assert n0["step_ids"] == i0["step_ids"]
    assert n0["step_ids"] != n1["step_ids"]
    assert len(n0["step_ids"]) == 3 and all(len(b) == 2 for b in n0["step_ids"])
    assert n0["system_prompt"] == NEUTRAL and i0["system_prompt"] == INOC


def test_losses_and_probes_logged(study, runs):
    L, P = study.tlm.n_layers, 2 + study.cfg.align.n_assistant_tokens
    rec = _train_json(runs, "neutral", 0)
    assert len(rec["losses"]) == 3 and all(math.isfinite(x) for x in rec["losses"])
    assert [p["step"] for p in rec["probes"]] == [0, 2, 3]
    for p in rec["probes"]:
        assert torch.tensor(p["cos"]).shape == (L, P) and math.isfinite(p["loss"])
        assert all(-1 <= c <= 1 for row in p["cos"] for c in row)
    assert rec["positions"] == ["final_prompt", "a1", "a2", "a3", "a_sum"]
    assert rec["finetune_config"]["steps"] == 3 and rec["seed"] == 0 and rec["wall_s"] > 0
    assert rec["timing_s"]["train_steps"] > 0 and rec["peak_cuda_memory_gb"] is None  # CPU: no device peak
    assert rec["probes"][0]["loss"] != rec["probes"][-1]["loss"]  # the model moved
    assert runs["results"][("neutral", 0)] == rec  # train_run returns the record it wrote
    assert torch.tensor(rec["probes"][0]["cos"]).shape == (L, P)
    assert (_files(runs["out"], "neutral", 0).adapter / "adapter_config.json").is_file()


def test_step0_probe_matches_base_alignment(study, sft, v, runs):
    """Before any update the LoRA model is the base model: the probe equals align's measurement."""
    from nnsight_inoc.stages.align import measure_condition

    sub = SFTSet(sft.ids[:2], sft.prompts[:2], sft.source_answers[:2], sft.completions[:2], {})
    ref = measure_condition(study, "neutral", NEUTRAL, sub, v)
    got = torch.tensor(runs["results"][("neutral", 0)]["probes"][0]["cos"])
    torch.testing.assert_close(got, ref["cos"].mean(0), atol=1e-5, rtol=1e-4)


def test_saved_adapter_reloads(study, runs):
    model, _ = runs["captured"][("neutral", 0)]
    loaded = F.load_trained(study.loaded.hf_model, _files(runs["out"], "neutral", 0).folder)
    want = {n: p for n, p in model.named_parameters() if "lora_" in n}
    got = dict(loaded.named_parameters())
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for n, p in want.items():
        assert torch.equal(got[n], p), n


def test_huge_lr_raises_naming_step(study, sft, v, tmp_path):
    old = study.cfg.finetune.lr, study.cfg.finetune.probe_every
    study.cfg.finetune.lr, study.cfg.finetune.probe_every = 1e30, 100
    try:
        with pytest.raises(NonFiniteError, match=r"step \d"):
            train_lora(study, "neutral", NEUTRAL, sft, 0, v, tmp_path)
    finally:
        study.cfg.finetune.lr, study.cfg.finetune.probe_every = old
    assert not _files(tmp_path, "neutral", 0).train_json.exists()


def test_nan_lora_weight_raises(study, sft, v, tmp_path, monkeypatch):
    real = F.get_peft_model

    def poisoned(model, cfg):
        m = real(model, cfg)
        name, p = next((n, p) for n, p in m.named_parameters() if "lora_A" in n)
        with torch.no_grad():
            p[0, 0] = float("nan")
        return m

    monkeypatch.setattr(F, "get_peft_model", poisoned)
    with pytest.raises(NonFiniteError, match="step 0"):
        train_lora(study, "neutral", NEUTRAL, sft, 0, v, tmp_path)


def test_nan_training_loss_raises(study, sft, v, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "batch_loss", lambda model, batch: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(NonFiniteError, match="step 0: non-finite training loss"):
        train_lora(study, "neutral", NEUTRAL, sft, 0, v, tmp_path)


def test_bad_inputs(study, sft, v, tmp_path):
    with pytest.raises(ValueError, match="v must be"):
        train_lora(study, "neutral", NEUTRAL, sft, 0, v[:, :5], tmp_path)
    small = SFTSet(sft.ids[:1], sft.prompts[:1], sft.source_answers[:1], sft.completions[:1], {})
    with pytest.raises(ValueError, match="n_probe"):
        train_lora(study, "neutral", NEUTRAL, small, 0, v, tmp_path)


def test_measure_behaviour_and_drift(study, sft, v, runs):
    from nnsight_inoc.measures.drift import drift
    from nnsight_inoc.probes.behaviour import measure_behaviour

    prompts = sft.prompts[:3]
    kw = dict(max_new_tokens=study.cfg.extract.max_new_tokens,
              rows_per_call=study.cfg.execution.drift_rows_per_call, read_batch_size=study.cfg.extract.batch_size)
    tok, trait = study.loaded.tokenizer, study.trait
    pre = measure_behaviour(study.tlm, tok, trait, NEUTRAL, prompts, v, **kw)
    keys = {"system_prompt", "prompts", "answers", "scores", "mean_score", "share_above_half", "n_unscored", "projection"}
    assert keys <= set(pre)
    assert len(pre["answers"]) == 3 and len(pre["projection"]) == study.tlm.n_layers
    assert pre["n_unscored"] == sum(1 for s in pre["scores"] if s is None or math.isnan(s))
    trained = F.load_trained(study.loaded.hf_model, _files(runs["out"], "neutral", 0).folder)
    post = measure_behaviour(wrap(trained), tok, trait, NEUTRAL, prompts, v, **kw)
    assert post["projection"] != pre["projection"]  # the adapter changes the residual stream

    a = dict(pre, mean_score=0.2, share_above_half=0.0, projection=[1.0, 2.0, 3.0])
    b = dict(pre, mean_score=0.7, share_above_half=0.5, projection=[1.5, 1.0, 3.0])
    d = drift(a, b)
    assert d["mean_score"] == pytest.approx(0.5) and d["share_above_half"] == pytest.approx(0.5)
    assert d["projection"] == pytest.approx([0.5, -1.0, 0.0])
    with pytest.raises(ValueError, match="prompts"):
        drift(a, dict(b, prompts=["other"]))
    trained.train()
    with pytest.raises(ValueError, match="eval mode"):
        measure_behaviour(wrap(trained), tok, trait, NEUTRAL, prompts, v, **kw)


def test_nan_gradient_with_finite_loss_raises(study, sft, v, tmp_path, monkeypatch):
    real = F.batch_loss

    def nan_grad(model, batch):
        loss = real(model, batch)
        p = next(p for p in model.parameters() if p.requires_grad)
        return loss + (p.sum() * 0).abs().sqrt()  # value +0, gradient inf * 0 = NaN

    monkeypatch.setattr(F, "batch_loss", nan_grad)
    with pytest.raises(NonFiniteError, match="step 0: non-finite gradient"):
        train_lora(study, "neutral", NEUTRAL, sft, 0, v, tmp_path)


def test_bf16_autocast_training_keeps_fp32_weights_and_probes(study, sft, v, runs, tmp_path, monkeypatch):
    """train_autocast=bfloat16 changes the training matmuls only: the losses move a little,
    the LoRA weights stay fp32, and the step-0 probe (study precision) is bitwise the fp32 one."""
    monkeypatch.setattr(study.cfg.finetune, "train_autocast", "bfloat16")
    train_lora(study, "neutral", NEUTRAL, sft, 0, v, tmp_path)
    bf = json.loads(_files(tmp_path, "neutral", 0).train_json.read_text())
    fp = _train_json(runs, "neutral", 0)
    assert bf["finetune_config"]["train_autocast"] == "bfloat16"
    assert bf["losses"][0] != fp["losses"][0]  # autocast really took effect
    assert bf["losses"][0] == pytest.approx(fp["losses"][0], rel=0.05)
    assert bf["probes"][0] == fp["probes"][0]
    assert all(math.isfinite(x) for x in bf["losses"])


def test_tf32_is_refused_off_cuda_before_any_step(study, sft, v, tmp_path, monkeypatch):
    """TF32 is a tensor-core format: on CPU it would change nothing, so asking for it is an error, not a no-op."""
    monkeypatch.setattr(study.cfg.finetune, "train_autocast", "tf32")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train_lora(study, "neutral", NEUTRAL, sft, 0, v, tmp_path)
    assert not _files(tmp_path, "neutral", 0).folder.exists()


def test_tf32_is_refused_on_a_non_fp32_model(study, monkeypatch):
    monkeypatch.setattr(study.cfg.finetune, "train_autocast", "tf32")
    monkeypatch.setattr(study.loaded, "dtype", "bfloat16")
    with pytest.raises(ValueError, match="float32 model"):
        precision(study).check(torch.device("cuda"))


def test_tf32_step_covers_forward_and_backward_then_restores(study, sft, monkeypatch):
    """The TF32 flag is read when each matmul runs, so the backward must run inside the context too;
    afterwards the probes' fp32 setting is back, also after a failing step."""
    monkeypatch.setattr(study.cfg.finetune, "train_autocast", "tf32")
    monkeypatch.setattr(F.Precision, "check", lambda self, device: None)  # CPU stands in for CUDA here
    seen: dict[str, str] = {}
    real = F.batch_loss

    def spy(model, batch):
        seen["forward"] = torch.get_float32_matmul_precision()
        loss = real(model, batch)
        loss.register_hook(lambda g: seen.__setitem__("backward", torch.get_float32_matmul_precision()))
        return loss

    monkeypatch.setattr(F, "batch_loss", spy)
    model = F.make_lora_model(study.loaded.hf_model, study.cfg.finetune)
    params = F.lora_parameters(model)
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3)
    batch = encode_chats(study.loaded.tokenizer, NEUTRAL, sft.prompts[:2], sft.completions[:2])
    before = torch.get_float32_matmul_precision()
    assert before == "highest"
    loss = F.train_step(model, opt, params, batch, 0, precision(study))
    assert seen == {"forward": "high", "backward": "high"} and math.isfinite(loss)
    assert torch.get_float32_matmul_precision() == before

    monkeypatch.setattr(F, "batch_loss", lambda model, batch: real(model, batch) * float("nan"))
    with pytest.raises(NonFiniteError):
        F.train_step(model, opt, params, batch, 1, precision(study))
    assert torch.get_float32_matmul_precision() == before
