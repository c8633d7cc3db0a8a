"""One command at a time per run folder: a second one is refused at once, naming the holder's PID; finetune
workers share the folder; a dead holder's lock is gone with it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.core.lock import RunFolderBusy, holders, run_folder_lock
from tests._paths import ROOT

HOLD = """
import sys, time
from pathlib import Path
from nnsight_inoc.core.lock import run_folder_lock
with run_folder_lock(Path(sys.argv[1]), "python cli.py align --condition all", shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold(run: Path, mode: str = "exclusive") -> subprocess.Popen[str]:
    """Another process holding the run folder's lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run), mode], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


def test_second_holder_is_refused_naming_the_first(tmp_path):
    proc = hold(tmp_path / "run")
    try:
        with pytest.raises(RunFolderBusy) as err:
            with run_folder_lock(tmp_path / "run", "python cli.py extract"):
                pass
        msg = str(err.value)
        assert f"pid {proc.pid}" in msg and "align --condition all" in msg and "another --run-dir" in msg
        with pytest.raises(RunFolderBusy):  # a shared holder (a finetune worker) is refused as well
            with run_folder_lock(tmp_path / "run", "worker", shared=True):
                pass
    finally:
        stop(proc)
    with run_folder_lock(tmp_path / "run", "python cli.py extract"):  # the kernel dropped the dead holder's lock
        recs = holders(tmp_path / "run")
        assert [r["pid"] for r in recs] == [os.getpid()]  # and its record was cleared
    assert not list(RunLayout(tmp_path / "run").lock_dir.glob("*.json"))  # ours is removed on release


def test_workers_share_the_folder_but_not_with_a_stage(tmp_path):
    proc = hold(tmp_path / "run", "shared")
    try:
        with run_folder_lock(tmp_path / "run", "worker 1", shared=True):  # a second worker joins
            assert {r["pid"] for r in holders(tmp_path / "run")} == {proc.pid, os.getpid()}
        with pytest.raises(RunFolderBusy, match=f"pid {proc.pid}"):
            with run_folder_lock(tmp_path / "run", "python cli.py align"):
                pass
    finally:
        stop(proc)


def test_two_holders_in_one_process_exclude_each_other(tmp_path):
    """flock locks belong to open files, not processes: the check works within one process too."""
    with run_folder_lock(tmp_path / "run", "first"):
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            with run_folder_lock(tmp_path / "run", "second"):
                pass


def test_a_stale_record_without_a_lock_does_not_block(tmp_path):
    layout = RunLayout(tmp_path / "run")
    layout.lock_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    layout.lock_holder(socket.gethostname(), pid).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": pid, "command": "old", "since": "x"}))
    assert holders(tmp_path / "run") == []  # a dead process on this host is not a holder
    with run_folder_lock(tmp_path / "run", "new"):
        assert not layout.lock_holder(socket.gethostname(), pid).exists()


def test_pid_alive():
    import os
    import subprocess
    import sys

    from nnsight_inoc.core.lock import pid_alive

    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its PID no longer names a process
    assert not pid_alive(child.pid)
