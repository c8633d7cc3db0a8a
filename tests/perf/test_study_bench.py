"""perf/study_bench.py runs the whole study on a tiny model, one process or the two-process schedule.

No timing is asserted: the clock is for GPUs. Checked: every stage ran and was timed, the grouped
executor trained every run with drift, and the two-process schedule splits the runs between its
processes (the loss-matched runs after align, the others as soon as extract and the SFT answers exist).
"""

from __future__ import annotations

import json
import subprocess
import sys

from nnsight_inoc.core.config import dump_toml
from tests._paths import ROOT
from tests._study import tiny_study_folder


def _run(tmp_path, gpus: str, *extra: str) -> dict:
    cfg, run_dir = tiny_study_folder(tmp_path, execution={"executor": "grouped"},
                                     finetune={"steps": 2, "batch_size": 2, "seeds": [0], "probe_every": 1,
                                               "n_probe": 2, "n_drift_prompts": 3, "lr": 1e-2, "which": "main",
                                               "target_modules": ["q_proj", "v_proj"]})
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(dump_toml(cfg))
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / "study_bench.py"), "--config", str(cfg_path),
                           "--run-dir", str(run_dir), "--out", str(out), "--gpus", gpus, *extra],
                          capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT),
                                                                        **_env()})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert (run_dir / "report.md").is_file() and (run_dir / "finetune" / "finetune_summary.json").is_file()
    summary = json.loads((run_dir / "finetune" / "finetune_summary.json").read_text())
    assert summary["n_runs"] == 4 and not summary["not_run"]
    return result


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_two_process_schedule_splits_the_runs(tmp_path):
    result = _run(tmp_path, "0,0")
    prep, train = result["processes"]
    assert prep["role"] == "prep" and train["role"] == "train"
    assert prep["runs"] == 1 and train["runs"] == 3  # lossmatch after align; the other three at once
    assert "wait_for_extract_and_sft" in train["stage_s"] and "align" in prep["stage_s"]


def test_one_process_times_every_stage_of_two_studies_and_the_anchors(tmp_path):
    cfg2, run2 = tiny_study_folder(tmp_path / "second", execution={"executor": "grouped"},
                                   finetune={"steps": 2, "batch_size": 2, "seeds": [0], "probe_every": 2,
                                             "n_probe": 2, "n_drift_prompts": 3, "lr": 1e-2, "which": "main",
                                             "target_modules": ["q_proj", "v_proj"]})
    cfg2_path = tmp_path / "cfg2.toml"
    cfg2_path.write_text(dump_toml(cfg2))
    result = _run(tmp_path, "0", "--also", str(cfg2_path), str(run2), "--anchors", "--matmul-n", "128")
    assert len(result["processes"]) == 2 and (run2 / "report.md").is_file()
    for proc in result["processes"]:
        assert set(proc["stage_s"]) == {"load_model", "extract", "sft_completions", "align", "finetune_and_drift",
                                        "drift_summary"}
        assert proc["runs"] == 4 and proc["group_sizes"] == [4]  # the four main conditions of the seed, one group
    assert result["report_s"] >= 0 and result["wall_s"] > 0 and result["git"]["commit"]
    assert set(result["per_run"]) == {str(tmp_path / "run"), str(run2)}
    for cost in result["per_run"].values():
        assert cost["n_runs_trained"] == cost["n_runs_with_drift"] == 4
        assert cost["median_per_run_s"]["train_steps_s"] > 0
    a = result["anchors"]
    assert a["train_steps_flops"] > 0 and a["achieved_tflops"] > 0 and a["matmul"]["tflops"] > 0
    assert a["peft_vs_grouped"]["k_all"] == 4
