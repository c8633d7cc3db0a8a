"""perf/step_memory.py runs on the CPU (tiny widths) and its accounting means what it says."""

from __future__ import annotations

import importlib.util
import json

from click.testing import CliRunner

from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location("step_memory", ROOT / "perf" / "step_memory.py")
sm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sm)


def test_categories_by_module_name():
    lora = {"model.layers.0.mlp.down_proj"}
    assert sm.category("model.layers.0.mlp.down_proj", lora) == "lora"
    assert sm.category("model.layers.0.mlp.act_fn", lora) == "mlp"
    assert sm.category("model.layers.0.mlp", lora) == "mlp"
    assert sm.category("model.layers.3.self_attn", lora) == "attention"
    assert sm.category("model.layers.3.post_attention_layernorm", lora) == "norms"
    assert sm.category("model.norm", lora) == "norms"
    assert sm.category("model.embed_tokens", lora) == "embeddings"
    assert sm.category("", lora) == "logits_loss" and sm.category("lm_head", lora) == "logits_loss"
    assert sm.layer_of("model.layers.12.mlp") == 12 and sm.layer_of("model.norm") is None


def test_runs_on_cpu_and_checkpointing_shrinks_what_is_saved(tmp_path):
    out = tmp_path / "mem.json"
    res = CliRunner().invoke(sm.main, ["--shape", "tiny", "--layers", "2", "--full-layers", "5", "--tokens", "24",
                                       "--completion", "4", "10", "--time-steps", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    d = json.loads(out.read_text())
    lv = d["levels"]
    assert set(lv) == {"none", "mlp", "attn_mlp"} and set(d["step_s_k1"]) == set(lv)
    none, mlp, both = (lv[k]["per_run_bytes"] for k in ("none", "mlp", "attn_mlp"))
    # tiny widths: d = 32, d_mlp = 64; per token and layer the MLP keeps gate, up, act(gate) (3 x 64 floats)
    rows, tokens, full = 8, 24, 5
    assert none["mlp"] == 3 * 64 * 4 * rows * tokens * full
    assert mlp["mlp"] == 32 * 4 * rows * tokens * full  # only the block's input, kept by the checkpoint
    assert mlp["attention"] == none["attention"] and both["attention"] < none["attention"]
    assert both["lora"] == 0 < mlp["lora"] < none["lora"]  # LoRA's saved inputs live inside the blocks
    assert none["logits_loss"] == mlp["logits_loss"] == both["logits_loss"] > 0
    assert lv["none"]["per_run_total"] > lv["mlp"]["per_run_total"] > lv["attn_mlp"]["per_run_total"]
