"""perf/anchors.py: the FLOP formula against torch's own FLOP counter, the matmul rate, and the PEFT-vs-grouped
timing on a tiny study (CPU; the numbers are timings of a tiny model and mean nothing, the contracts are pinned)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

from nnsight_inoc.models.tiny import tiny_qwen2
from nnsight_inoc.trace.chat import make_batch
from nnsight_inoc.trace.loss import loss_targets
from nnsight_inoc.train import grouped as G
from perf.anchors import main, matmul_rate, step_flops

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize(("targets", "checkpointing"), [(TARGETS, "none"), (["q_proj", "v_proj"], "none"),
                                                       (TARGETS, "attn_mlp"), (["q_proj", "down_proj"], "mlp")])
def test_step_flops_match_torch_flop_counter(targets, checkpointing):
    model = tiny_qwen2(num_layers=6, hidden_size=32, seed=1).float()
    model.config._attn_implementation = "eager"  # attention as matmuls, which the counter sees (CPU SDPA it does not)
    model.requires_grad_(False)
    k, rows, r = 2, 3, 4
    g = G.fresh(model, k, r, 8.0, targets)
    gen = torch.Generator().manual_seed(0)
    lens = torch.randint(8, 14, (k * rows,), generator=gen).tolist()
    prompts = [torch.randint(5, 100, (n,), generator=gen).tolist() for n in lens]
    comps = [torch.randint(5, 100, (n,), generator=gen).tolist() for n in torch.randint(3, 7, (k * rows,)).tolist()]
    batch = make_batch(prompts, comps, 0, padding_side="right")
    opt = torch.optim.AdamW(g.parameters(), lr=1e-3)
    with FlopCounterMode(display=False) as fc:
        G.train_step(g, model, opt, batch, 0, None, checkpointing=checkpointing)
    b, t = batch.input_ids.shape
    ours = step_flops(model, b, t, loss_targets(batch).window, r, targets, checkpointing)
    assert (ours["recompute"] > 0) == (checkpointing != "none")
    assert ours["total"] == pytest.approx(fc.get_total_flops(), rel=0.03)
    assert ours["total"] >= fc.get_total_flops()  # the documented overcount (layer 0's input side), never under
    without_lora = step_flops(model, b, t, loss_targets(batch).window, r, ["nothing_matches"])
    assert without_lora["lora"] == 0 and ours["lora"] > 0


def test_matmul_rate_is_positive_and_refuses_unknown_precision():
    res = matmul_rate(torch.device("cpu"), "fp32", n=64, repeats=3)
    assert res["tflops"] > 0 and res["n"] == 64
    with pytest.raises(ValueError, match="precision"):
        matmul_rate(torch.device("cpu"), "fp8", n=8)


def test_anchors_cli_on_a_tiny_study(tmp_path):
    from nnsight_inoc.core.config import dump_toml
    from nnsight_inoc.stages.extract import run_extract
    from nnsight_inoc.study import ensure_sft, open_study
    from tests._study import tiny_study_folder

    cfg, run_dir = tiny_study_folder(tmp_path)
    study = open_study(cfg, run_dir, "pytest")
    run_extract(study)
    ensure_sft(study)
    conf = tmp_path / "c.toml"
    conf.write_text(dump_toml(cfg))
    out = tmp_path / "anchors.json"
    res = CliRunner().invoke(main, ["--config", str(conf), "--run-dir", str(run_dir), "--out", str(out),
                                    "--steps", "1", "--matmul-n", "64"])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    p = rec["peft_vs_grouped"]
    assert p["k_all"] >= 2 and p["peft_one_run_ms"] > 0 and p["grouped_kall_ms_per_run"] > 0
    assert rec["step_flops_one_group"]["flops"] > 0 and rec["step_flops_one_group"]["steps"] == cfg.finetune.steps
