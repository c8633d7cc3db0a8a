"""gpu/ray_kill.py without Ray: finding a task's worker by its scratch folder, killing it, and the retry verdict."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from nnsight_inoc.stages.ray_exec import SCRATCH_PREFIX
from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location("ray_kill", ROOT / "gpu" / "ray_kill.py")
ray_kill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ray_kill)


def test_prefix_is_the_executors():
    assert ray_kill.PREFIX == SCRATCH_PREFIX


def test_a_task_that_ran_long_enough_is_killed_by_its_pid(tmp_path):
    # a stand-in for a Ray worker: its command line names ray, as a real one's does ("ray::task:inoc_seed0")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ray::task:inoc_seed0"])
    try:
        (tmp_path / f"{SCRATCH_PREFIX}{proc.pid}_inoc_seed0.k_3x9").mkdir()
        (tmp_path / f"{SCRATCH_PREFIX}999999999_gone_seed0.abc").mkdir()  # no such process: not a candidate
        assert ray_kill.running_tasks(tmp_path) == {proc.pid: "inoc_seed0"}
        rec = ray_kill.kill_one(tmp_path, sweep_pid=proc.pid, after_s=0.3, wait_s=20)
        assert rec["killed_pid"] == proc.pid and rec["task"] == "inoc_seed0" and rec["seconds_after_task_seen"] >= 0.3
        assert proc.wait() == -9  # not killed: the stand-in exits 0 after its 60 s sleep
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(RuntimeError, match="ended before"):  # the sweep is gone: no waiting for nothing
        ray_kill.kill_one(tmp_path, sweep_pid=proc.pid, after_s=0.3, wait_s=5)


def _provenance(run, errors, pid, failed=None):
    stage = {"attempts": {"inoc_seed0": 1 + len(errors)}, "errors": {"inoc_seed0": errors} if errors else {},
             "workers": {"inoc_seed0": {"pid": pid}}, "done": ["inoc_seed0"], "failed": failed or {}, "max_retries": 2}
    (run / "provenance.json").write_text(json.dumps({"stages": {"finetune_ray_main": stage}}))


def test_the_verdict_needs_a_worker_crash_then_another_process(tmp_path):
    killed = {"killed_pid": 11, "task": "inoc_seed0"}
    _provenance(tmp_path, ["WorkerCrashedError: The worker died unexpectedly"], pid=12)
    rec = ray_kill.check(tmp_path, killed, "main")
    assert rec["retried_after_kill"] and rec["attempts"] == 2 and rec["max_retries"] == 2
    _provenance(tmp_path, [], pid=11)  # the kill came too late: the task finished in the killed process
    assert not ray_kill.check(tmp_path, killed, "main")["retried_after_kill"]
    _provenance(tmp_path, ["WorkerCrashedError: x"], pid=12, failed={"neutral_seed0": "boom"})
    assert not ray_kill.check(tmp_path, killed, "main")["retried_after_kill"]
