"""Claims that let several finetune workers share one run folder, and the worker command lines."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from nnsight_inoc.core.layout import OWNER
from nnsight_inoc.stages.workers import claim, cli_base, worker_commands


def test_fresh_claim_is_taken_once(tmp_path):
    assert claim(tmp_path, "inoc_seed0")
    owner = json.loads((tmp_path / "inoc_seed0" / OWNER).read_text())
    assert owner == {"host": socket.gethostname(), "pid": os.getpid()}
    assert claim(tmp_path, "inoc_seed0")  # re-asking for one's own claim is fine


def test_claim_held_by_live_process_is_refused(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid}))
        assert not claim(tmp_path, "run")
    finally:
        proc.kill()
        proc.wait()
    assert claim(tmp_path, "run")  # its holder is gone now: stale, taken over
    assert json.loads((tmp_path / "run" / OWNER).read_text())["pid"] == os.getpid()


def test_claim_of_another_host_or_half_written_is_left_alone_until_orphaned(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / OWNER).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert not claim(tmp_path, "a")
    (tmp_path / "b").mkdir()  # owner file not written yet
    assert not claim(tmp_path, "b")
    os.utime(tmp_path / "b", (0, 0))  # ... and never written: its claimant died after mkdir
    assert claim(tmp_path, "b")
    assert json.loads((tmp_path / "b" / OWNER).read_text())["pid"] == os.getpid()


def test_worker_commands_pin_one_device_each():
    cmds = worker_commands(["python", "cli"], [0, 0, 3])
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in cmds] == ["0", "0", "3"]
    assert [env["NNSIGHT_INOC_WORKER"] for _, env in cmds] == ["0", "1", "2"]
    assert all(argv == ["python", "cli", "--worker"] for argv, _ in cmds)
    with pytest.raises(ValueError):
        worker_commands(["x"], [])
    with pytest.raises(ValueError):
        worker_commands(["x"], [-1])


def test_cli_base_passes_study_options_but_not_device():
    argv = cli_base("main", {"config_path": "c.toml", "run_dir": "r", "device": "cuda:3", "model": None, "seed": 2})
    assert argv[1:] == ["-m", "nnsight_inoc.cli", "finetune", "--which", "main", "--config", "c.toml",
                        "--seed", "2", "--run-dir", "r"]


def test_seeds_option_needs_worker():
    from click.testing import CliRunner

    from nnsight_inoc.cli import main

    res = CliRunner().invoke(main, ["finetune", "--seeds", "0", "--preset", "smoke"])
    assert res.exit_code != 0 and "--worker only" in res.output
