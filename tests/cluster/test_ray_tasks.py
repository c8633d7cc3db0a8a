"""The generic Ray task runner against its in-process reference, on a local two-worker Ray cluster on loopback.

Task functions and specs are defined in this module; the fixture registers the module for
pickling by value, because Ray workers cannot import a pytest test module. The cluster tests
skip when Ray is not installed (tools/ndif_local/install.sh brings it), and fail instead in CI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from nnsight_inoc.cluster.local import LocalCluster, alive, bound_sockets, is_loopback
from nnsight_inoc.cluster.ray_env import import_ray
from nnsight_inoc.cluster.ray_tasks import TasksFailed, capacity, run_sequential, run_tasks
from nnsight_inoc.core import artifacts
from tests._paths import ROOT
from tests._ray import require_ray

PACKAGE = [ROOT / "nnsight_inoc"]
DONE = "DONE.json"


@dataclass(frozen=True)
class Job:
    name: str
    n: int
    state_dir: str = ""  # where flaky tasks remember earlier attempts (tests run on one host)
    mode: str = "ok"     # ok | fail_once | crash_once | killed_once | always_fail | no_marker | where | seen
    seen: tuple[str, ...] = ()  # filled by `prepare`: what the driver had written before submitting

    @property
    def markers(self) -> tuple[str, ...]:
        return (f"{self.name}/{DONE}",)


def toy(job: Job) -> dict[str, bytes]:
    """Deterministic bytes from the job alone: a small JSON, a nested file, and one over Ray's 100 KiB inline limit."""
    state = Path(job.state_dir) / f"{job.name}.attempted" if job.state_dir else None
    first = state is not None and not state.exists()
    if state is not None:
        state.touch()
    if job.mode == "fail_once" and first:
        raise RuntimeError(f"{job.name}: first attempt fails")
    if job.mode == "crash_once" and first:
        os._exit(3)  # the worker process dies: Ray reports WorkerCrashedError
    if job.mode == "killed_once" and first:  # waits, mid-task, for the test to SIGKILL its worker process by PID
        artifacts.write_bytes(Path(job.state_dir) / f"{job.name}.pid", str(os.getpid()).encode())
        time.sleep(120)
    if job.mode == "always_fail":
        raise ValueError(f"boom in {job.name}")
    if job.mode == "where":
        import nnsight_inoc
        return {f"{job.name}/where.txt": nnsight_inoc.__file__.encode(), f"{job.name}/{DONE}": b"{}"}
    if job.mode == "seen":
        return {f"{job.name}/seen.txt": ",".join(job.seen).encode(), f"{job.name}/{DONE}": b"{}"}
    time.sleep(0.3)  # long enough for tasks to overlap, so concurrency can be seen
    big = hashlib.shake_256(f"{job.name}:{job.n}".encode()).digest(300_000)
    files = {f"{job.name}/result.json": f'{{"name": "{job.name}", "square": {job.n * job.n}}}\n'.encode(),
             f"{job.name}/sub/big.bin": big, f"{job.name}/{DONE}": b'{"ok": true}\n'}
    if job.mode == "no_marker":
        del files[f"{job.name}/{DONE}"]
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cluster():
    """Two CPU slots and two (declared) GPUs: at most two tasks at once, each in its own worker process.

    At the end: every process the cluster had is gone, its folder removed, and a process not
    ours (started before it) is left alone.
    """
    require_ray()
    ray = import_ray(single_node=True)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("PYTHONPATH", raising=False)  # workers find this package only through py_modules or cwd
            with LocalCluster(num_cpus=2, num_gpus=2, object_store_bytes=100 * 2**20) as c:
                yield c
        assert len(c.recorded()) >= 5  # leader, GCS, raylet, agents, workers
        assert not [p for p, s in c.recorded().items() if alive(p, s)]
        assert not c.temp_dir.exists()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# --- no Ray needed ---------------------------------------------------------------------------

def test_sequential_writes_marker_last_and_rejects_bad_specs(tmp_path):
    order: list[str] = []
    real = artifacts.write_bytes

    def spy(path: Path, data: bytes) -> None:
        order.append(str(path.relative_to(tmp_path)))
        real(path, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(artifacts, "write_bytes", spy)
        rep = run_sequential([Job("a", 2)], toy, tmp_path, progress=False)
    assert rep.done == ["a"] and order[-1] == f"a/{DONE}" and len(order) == 3
    assert (tmp_path / "a" / "result.json").read_bytes() == b'{"name": "a", "square": 4}\n'
    with pytest.raises(ValueError, match="unique"):
        run_sequential([Job("a", 1), Job("a", 2)], toy, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="relative path"):
        run_sequential([Job("../a", 1)], toy, tmp_path / "x", progress=False)


def test_failed_write_leaves_no_marker_and_a_rerun_completes(tmp_path):
    real = artifacts.write_bytes

    def disk_full(path: Path, data: bytes) -> None:
        if path.name == "result.json":
            raise OSError(28, "No space left on device")
        real(path, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(artifacts, "write_bytes", disk_full)
        with pytest.raises(TasksFailed, match="No space left") as info:
            run_sequential([Job("a", 1), Job("b", 2)], toy, tmp_path, max_retries=3, progress=False)
    assert info.value.report.attempts == {"a": 1, "b": 1}  # the driver's disk is not retried
    assert not list(tmp_path.rglob(DONE)) and not list(tmp_path.rglob("*.tmp"))
    rep = run_sequential([Job("a", 1), Job("b", 2)], toy, tmp_path, progress=False)
    assert rep.done == ["a", "b"] and rep.skipped == []


def test_missing_marker_fails_the_task_and_writes_nothing(tmp_path):
    with pytest.raises(TasksFailed, match="completion markers"):
        run_sequential([Job("a", 1, mode="no_marker"), Job("b", 2)], toy, tmp_path, progress=False)
    assert not (tmp_path / "a").exists() and (tmp_path / "b" / DONE).is_file()


def test_finished_sweep_needs_no_cluster(tmp_path):
    run_sequential([Job("a", 1)], toy, tmp_path, progress=False)
    rep = run_tasks([Job("a", 1)], toy, tmp_path, address="127.0.0.1:1", progress=False)  # nothing listens there
    assert rep.skipped == ["a"] and rep.done == []


def test_capacity_counts_what_fits_and_refuses_what_never_does():
    have = {"CPU": 16.0, "GPU": 2.0, "memory": 100e9}
    assert capacity(have, {"CPU": 1, "GPU": 1, "memory": 0}) == 2
    assert capacity(have, {"CPU": 1, "GPU": 0.5}) == 4
    assert capacity(have, {"CPU": 4, "GPU": 0}) == 4
    assert capacity(have, {"CPU": 1, "memory": 40e9}) == 2
    with pytest.raises(ValueError, match="GPU 3 > 2"):
        capacity(have, {"CPU": 1, "GPU": 3})


# --- on the local cluster ----------------------------------------------------------------------

@pytest.mark.ray
def test_ray_equals_sequential_on_two_workers(cluster, tmp_path):
    jobs = [Job(f"run{i}", i) for i in range(6)]
    ref = run_sequential(jobs, toy, tmp_path / "seq", progress=False)
    rep = run_tasks(jobs, toy, tmp_path / "ray", address=cluster.address, single_node=True, num_gpus_per_task=1,
                    py_modules=PACKAGE, progress=False)
    assert sorted(rep.done) == sorted(ref.done) == [j.name for j in jobs]
    assert tree(tmp_path / "ray") == tree(tmp_path / "seq")
    assert len(tree(tmp_path / "ray")) == 18
    ws = rep.workers.values()
    assert len({w["pid"] for w in ws} - {os.getpid()}) == 6  # a fresh worker process per GPU task (max_calls=1)
    assert {w["cuda_visible_devices"] for w in ws} == {"0", "1"}  # one declared GPU each
    spans = [(w["started"], w["started"] + w["seconds"]) for w in ws]
    overlap = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert overlap == 2  # two workers at once, never three
    socks = bound_sockets(set(cluster.pids()))
    assert socks and all(is_loopback(addr) for _, _, addr, _ in socks), socks


@pytest.mark.ray
def test_failures_are_retried_then_reported_by_name(cluster, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    jobs = [Job("flaky", 1, str(state), "fail_once"), Job("crashy", 2, str(state), "crash_once"),
            Job("bad", 3, str(state), "always_fail"), Job("good", 4)]
    with pytest.raises(TasksFailed) as info:
        run_tasks(jobs, toy, tmp_path / "out", address=cluster.address, single_node=True, max_retries=1,
                  py_modules=PACKAGE, progress=False, detail={"bad": "runs: x, y"})
    rep = info.value.report
    assert "bad (2 attempts): ValueError: boom in bad\n    runs: x, y" in str(info.value)
    assert rep.failed == {"bad": "ValueError: boom in bad"}
    assert rep.attempts == {"flaky": 2, "crashy": 2, "bad": 2, "good": 1}
    assert "RuntimeError: flaky: first attempt fails" in rep.errors["flaky"][0]
    assert rep.errors["crashy"][0].startswith("WorkerCrashedError: The worker died unexpectedly")
    assert sorted(rep.done) == ["crashy", "flaky", "good"]
    clean = [Job(j.name, j.n) for j in jobs if j.name != "bad"]
    run_sequential(clean, toy, tmp_path / "ref", progress=False)
    assert tree(tmp_path / "ref") == tree(tmp_path / "out")  # retries change nothing
    assert not (tmp_path / "out" / "bad").exists()  # nothing half-written


@pytest.mark.ray
def test_a_worker_killed_mid_task_is_retried_and_its_files_equal_an_uninterrupted_run(cluster, tmp_path):
    """SIGKILL from outside (an operator's `kill -9 PID`, the kernel's OOM killer) on a GPU task's worker process:
    Ray reports WorkerCrashedError (the task was submitted with Ray's max_retries=0), the driver resubmits it, the
    retry runs in a fresh process, and the files written equal those of a sweep nobody interrupted."""
    state = tmp_path / "state"
    state.mkdir()
    jobs = [Job("victim", 5, str(state), "killed_once"), Job("other", 6)]
    killed: list[int] = []

    def killer() -> None:
        pid_file = state / "victim.pid"
        deadline = time.monotonic() + 60
        while not pid_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        killed.append(int(pid_file.read_text()))
        os.kill(killed[0], signal.SIGKILL)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    t0 = time.monotonic()
    rep = run_tasks(jobs, toy, tmp_path / "out", address=cluster.address, single_node=True, num_gpus_per_task=0.5,
                    max_retries=1, py_modules=PACKAGE, progress=False)
    t.join(timeout=5)
    assert time.monotonic() - t0 < 60  # the retry did not wait for the killed attempt's sleep
    assert rep.attempts == {"victim": 2, "other": 1} and sorted(rep.done) == ["other", "victim"]
    assert len(rep.errors["victim"]) == 1 and rep.errors["victim"][0].startswith("WorkerCrashedError")
    assert rep.workers["victim"]["pid"] != killed[0]
    run_sequential([Job("victim", 5), Job("other", 6)], toy, tmp_path / "ref", progress=False)
    assert tree(tmp_path / "ref") == tree(tmp_path / "out")


@pytest.mark.ray
def test_resume_skips_finished_tasks(cluster, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    first = [Job(f"r{i}", i, str(state)) for i in range(3)]
    run_tasks(first, toy, tmp_path / "out", address=cluster.address, single_node=True, py_modules=PACKAGE,
              progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    for f in state.iterdir():
        f.unlink()
    before = signal.getsignal(signal.SIGTERM)
    rep = run_tasks([*first, Job("r3", 3, str(state))], toy, tmp_path / "out", address=cluster.address,
                    single_node=True, py_modules=PACKAGE, progress=False)
    assert signal.getsignal(signal.SIGTERM) is before  # the sweep's own SIGTERM handler is gone again
    assert rep.skipped == ["r0", "r1", "r2"] and rep.done == ["r3"]
    assert [f.name for f in state.iterdir()] == ["r3.attempted"]  # the finished ones did not run again
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


@pytest.mark.ray
def test_window_of_one_lets_each_task_see_the_ones_before(cluster, tmp_path):
    out = tmp_path / "out"

    def prepare(job: Job) -> Job:
        return dataclasses.replace(job, seen=tuple(sorted(p.parent.name for p in out.glob(f"*/{DONE}"))))

    jobs = [Job(f"s{i}", i, mode="seen") for i in range(3)]
    run_tasks(jobs, toy, out, address=cluster.address, single_node=True, max_in_flight=1, prepare=prepare,
              py_modules=PACKAGE, progress=False)
    assert [(out / f"s{i}" / "seen.txt").read_text() for i in range(3)] == ["", "s0", "s0,s1"]


@pytest.mark.ray
def test_workers_import_this_package_from_py_modules(cluster, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)  # Ray also puts the driver's cwd on the workers' path: make it hold no package
        run_tasks([Job("w", 0, mode="where")], toy, tmp_path / "out", address=cluster.address, single_node=True,
                  py_modules=PACKAGE, progress=False)
    where = (tmp_path / "out" / "w" / "where.txt").read_text()
    assert where.startswith(str(cluster.temp_dir)) and "py_modules_files" in where, where


@pytest.mark.ray
def test_task_larger_than_cluster_fails_at_once(cluster, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="GPU 3 > 2"):
        run_tasks([Job("big", 1)], toy, tmp_path, address=cluster.address, single_node=True, num_gpus_per_task=3,
                  progress=False)
    assert time.monotonic() - t0 < 30
