"""perf/campaign_clock.py reads a run folder's own timing: prep stages from provenance, groups from train.json, drift."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location("campaign_clock", ROOT / "perf" / "campaign_clock.py")
campaign_clock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(campaign_clock)


def _run(folder: Path, name: str, k: int, runs: list[str], steps: float, drift: float | None) -> None:
    (folder / "finetune" / name).mkdir(parents=True)
    (folder / "finetune" / name / "train.json").write_text(json.dumps(
        {"executor": {"k": k, "runs": runs}, "timing_s": {"train_steps": steps, "probes": 3.0 * k, "setup_and_save": 1},
         "peak_cuda_memory_gb": None}))
    if drift is not None:
        (folder / "finetune" / name / "drift.json").write_text(json.dumps({"wall_s": drift}))


def test_clock_divides_group_timing_by_k_and_takes_medians(tmp_path: Path) -> None:
    (tmp_path / "provenance.json").write_text(json.dumps({"stages": {"extract": {"seconds": 60.0},
                                                                     "align_all": {"seconds": 400.0, "x": 1}}}))
    _run(tmp_path, "a_seed0", 2, ["a_seed0", "b_seed0"], 40.0, 10.0)
    _run(tmp_path, "b_seed0", 2, ["a_seed0", "b_seed0"], 40.0, 12.0)
    _run(tmp_path, "c_seed0", 1, ["c_seed0"], 30.0, None)
    res = campaign_clock.clock(tmp_path)  # a NaN drift (no drift.json) is left out of the median
    assert res["prep_total_s"] == 460.0 and len(res["groups"]) == 2
    assert res["per_run"]["a_seed0"]["train_steps_s"] == 20.0 and res["per_run"]["c_seed0"]["train_steps_s"] == 30.0
    assert math.isnan(res["per_run"]["c_seed0"]["drift_s"])
    assert res["median_per_run_s"] == {"train_steps_s": 20.0, "probes_s": 3.0, "drift_s": 11.0}
    assert res["n_runs_trained"] == 3 and res["n_runs_with_drift"] == 2


def test_the_published_clock_is_the_published_folders() -> None:
    """results/bench/h100_2026-12-08 was written by this script from results/decisive_allcaps and still matches it."""
    saved = json.loads((ROOT / "results" / "bench" / "h100_2026-12-08" / "decisive_allcaps_clock.json").read_text())
    now = campaign_clock.clock(ROOT / "results" / "decisive_allcaps")
    assert saved["median_per_run_s"] == now["median_per_run_s"] and saved["prep_total_s"] == now["prep_total_s"]
