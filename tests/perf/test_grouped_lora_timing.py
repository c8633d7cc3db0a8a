"""perf/grouped_lora_timing.py runs on CPU (tiny shape) and reports both paths; no timing asserts."""

from __future__ import annotations

import importlib.util

from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location(
    "grouped_lora_timing", ROOT / "perf" / "grouped_lora_timing.py")
glt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(glt)


def test_measures_both_paths_on_a_tiny_model():
    d = glt.measure(hidden=32, layers=1, k=2, steps=1, warmup=0)
    for key in ("wall_s_per_run_step", "cpu_s_per_run_step"):
        assert d[key]["separate"] > 0 and d[key]["grouped"] > 0
    assert d["tokens_per_row"]["grouped"] == max(d["tokens_per_row"]["separate"])
    # one grouped step launches about as many ops as one separate run-step, shared by k runs
    assert d["aten_ops_per_run_step"]["grouped"] < d["aten_ops_per_run_step"]["separate"]
