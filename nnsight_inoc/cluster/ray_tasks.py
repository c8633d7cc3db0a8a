"""Run a sweep's tasks as Ray tasks; the driver writes each task's files atomically, its markers last.

A task is any picklable object with a unique ``name`` and ``markers``: the files (relative paths
under ``dest``) that say it is complete. ``fn(task)`` runs on a Ray worker and returns the task's
files as ``{path relative to dest: bytes}``. Why bytes back through Ray instead of workers writing
files: the workers then need no shared filesystem with the driver, and only the driver writes
``dest``, so a crash of a worker never leaves a half-written file. Each file is written through
``artifacts.write_bytes`` (temporary sibling + ``os.replace``), every other file before the
markers and the markers last, in their order: a task whose markers all exist is complete, which
is what ``is_done`` checks by default, so an interrupted sweep resumes where it stopped.

Retries are the driver's, not Ray's (each task is submitted with ``max_retries=0``): a failed
attempt, whether the function raised (``RayTaskError``, which wraps the worker's exception and
traceback) or its worker process died (``WorkerCrashedError``), is resubmitted up to
``max_retries`` times, and every attempt's error is kept. Ray's own ``max_retries`` and
``retry_exceptions=True`` would do the same retries but show the driver only the last error,
and no attempt count. Failures never stop the other tasks; at the end ``TasksFailed`` names
every task that failed, with its last error, after every successful task has been written.

Submission is windowed: at most ``max_in_flight`` tasks are submitted at once (default: as many
as the cluster can run now), and ``prepare(task)`` is called at each submission, so a task can
carry what the driver learned from the tasks before it (the finetune executor ships the cache
entries finished tasks returned).

Why in ``cluster/`` (floor 1) and not beside the finetune executor: nothing here knows about
studies, runs or models (it needs only ``core``), and it is tested on toy tasks; the finetune
plan's executor (``stages/ray_exec.py``) is one user. ``run_sequential`` is the same contract in
this process, without Ray: the reference a Ray sweep must reproduce byte for byte.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, Self, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nnsight_inoc.cluster.ray_env import import_ray
from nnsight_inoc.core.progress import console, log


class TaskSpec(Protocol):
    """What a task must have: a unique ``name`` and the ``markers`` that are written last."""

    @property
    def name(self) -> str: ...

    @property
    def markers(self) -> Sequence[str]: ...


T = TypeVar("T", bound=TaskSpec)


@dataclass
class Report:
    """What a sweep did. Names in `done` are in completion order.

    `attempts` counts this call's attempts per task; `errors` holds every failed attempt's error;
    `workers` says where and how each successful attempt ran (pid, host, CUDA_VISIBLE_DEVICES,
    start as Unix time, seconds, the worker process's peak resident memory in GB).
    """

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)


class TasksFailed(RuntimeError):
    """Raised after a sweep in which some task failed every attempt; ``report`` has the details.

    ``detail`` adds a line per failed task (e.g. the runs a group held).
    """

    def __init__(self, report: Report, detail: Mapping[str, str] | None = None) -> None:
        self.report = report
        detail = detail or {}
        lines = [f"  {name} ({report.attempts.get(name, 0)} attempts): {err}"
                 + (f"\n    {detail[name]}" if name in detail else "") for name, err in report.failed.items()]
        super().__init__(f"{len(report.failed)} task(s) failed, {len(report.done)} written, "
                         f"{len(report.skipped)} already done:\n" + "\n".join(lines))


def check_relpath(rel: str, what: str) -> None:
    """ValueError unless `rel` is a plain relative POSIX path that stays inside its root."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or str(p) != rel:
        raise ValueError(f"{what} {rel!r} is not a plain relative path inside the destination")


def _check_tasks(tasks: Sequence[TaskSpec], max_retries: int) -> None:
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"task names must be unique; repeated: {dup}")
    for t in tasks:
        if not t.name:
            raise ValueError("a task has an empty name")
        if not t.markers:
            raise ValueError(f"task {t.name} names no markers (the files that mark it complete)")
        for m in t.markers:
            check_relpath(m, f"task {t.name}: marker")


def execute(fn: Callable[[T], Mapping[str, bytes]], task: T) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Run `fn(task)` and check its output; returns (files, where and how it ran). Runs on the worker."""
    started, t0 = time.time(), time.perf_counter()
    files = fn(task)
    if not isinstance(files, Mapping):
        raise TypeError(f"task {task.name}: fn returned {type(files).__name__}, expected dict[str, bytes]")
    for rel, data in files.items():
        check_relpath(rel, f"task {task.name}: file")
        if not isinstance(data, bytes):
            raise TypeError(f"task {task.name}: file {rel!r} is {type(data).__name__}, expected bytes")
    meta = {"pid": os.getpid(), "host": socket.gethostname(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "started": started, "seconds": round(time.perf_counter() - t0, 3),
            # ru_maxrss is in KiB on Linux; a reused worker process reports its peak over all its tasks
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 3)}
    return dict(files), meta


def write_task(dest: Path, files: Mapping[str, bytes], markers: Sequence[str]) -> None:
    """Write a task's files atomically under `dest`: the others first (sorted), then `markers` in order.

    ValueError (nothing written) when a marker is missing from `files`.
    """
    # Imported here, not at the top: every Ray worker imports this module (for `execute`), and
    # artifacts pulls in torch, which only the driver's writes need.
    from nnsight_inoc.core import artifacts as A

    missing = [m for m in markers if m not in files]
    if missing:
        raise ValueError(f"the task returned no {missing} (its completion markers); files: {sorted(files)}")
    for rel in sorted(set(files) - set(markers)):
        A.write_bytes(dest / rel, files[rel])
    for rel in markers:
        A.write_bytes(dest / rel, files[rel])


class _Sweep:
    """Bookkeeping shared by both executors: skips, attempts, writes, progress and the final verdict."""

    def __init__(self, tasks: Sequence[T], dest: Path, max_retries: int, is_done: Callable[[T], bool] | None,
                 progress: bool, report: Report | None) -> None:
        self.dest, self.max_retries = dest, max_retries
        done = is_done or (lambda t: all((dest / m).is_file() for m in t.markers))
        self.report = Report() if report is None else report
        self.todo: list[Any] = []
        for t in tasks:
            (self.report.skipped.append(t.name) if done(t) else self.todo.append(t))
        self._bar: Progress | None = None
        if progress and console.is_terminal and os.environ.get("NNSIGHT_INOC_QUIET") != "1":
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
            self._tid = self._bar.add_task("sweep", total=len(tasks), completed=len(self.report.skipped))
        if self.report.skipped:
            log(f"sweep: {len(self.report.skipped)} of {len(tasks)} tasks already done, skipped")

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _advance(self) -> None:
        if self._bar is not None:
            n = len(self.report.failed)
            self._bar.update(self._tid, advance=1, description=f"sweep ({n} failed)" if n else "sweep")

    def started(self, name: str) -> None:
        self.report.attempts[name] = self.report.attempts.get(name, 0) + 1

    def succeeded(self, task: Any, files: Mapping[str, bytes], meta: dict[str, Any]) -> None:
        """Write the task's files; a failed write (the driver's disk, a missing marker) fails it without a retry."""
        try:
            write_task(self.dest, files, task.markers)
        except (OSError, ValueError) as err:
            self._give_up(task.name, f"{type(err).__name__}: {err}")
            return
        self.report.done.append(task.name)
        self.report.workers[task.name] = meta
        log(f"sweep: {task.name} done in {meta['seconds']:.1f} s (pid {meta['pid']} on {meta['host']}, "
            f"CUDA_VISIBLE_DEVICES={meta['cuda_visible_devices']})")
        self._advance()

    def failed(self, name: str, error: str) -> bool:
        """Record a failed attempt; True when the task gets another one."""
        self.report.errors.setdefault(name, []).append(error)
        n = self.report.attempts[name]
        if n <= self.max_retries:
            log(f"sweep: {name} failed (attempt {n} of {self.max_retries + 1}), retrying: {error}")
            return True
        self._give_up(name, error)
        return False

    def _give_up(self, name: str, error: str) -> None:
        self.report.failed[name] = error
        log(f"sweep: {name} FAILED after {self.report.attempts[name]} attempt(s): {error}")
        self._advance()

    def verdict(self, detail: Mapping[str, str] | None) -> Report:
        if self.report.failed:
            raise TasksFailed(self.report, detail)
        return self.report


def _one_line(text: str) -> str:
    """The last non-empty line of an error text (a traceback's own message), for reports."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text


def run_sequential(tasks: Sequence[T], fn: Callable[[T], Mapping[str, bytes]], dest: Path, *,
                   max_retries: int = 0, is_done: Callable[[T], bool] | None = None,
                   prepare: Callable[[T], T] | None = None, progress: bool = True,
                   detail: Mapping[str, str] | None = None, report: Report | None = None) -> Report:
    """`run_tasks` in this process, one task after another, with the same writes, retries and errors."""
    _check_tasks(tasks, max_retries)
    with _Sweep(tasks, dest, max_retries, is_done, progress, report) as sweep:
        for task in sweep.todo:
            while True:
                ready = prepare(task) if prepare else task
                sweep.started(task.name)
                try:
                    files, meta = execute(fn, ready)
                except Exception as err:  # noqa: BLE001 - any failure of the task is recorded, then retried or reported
                    if sweep.failed(task.name, f"{type(err).__name__}: {err}"):
                        continue
                    break
                sweep.succeeded(ready, files, meta)
                break
    return sweep.verdict(detail)


def capacity(have: Mapping[str, float], need: Mapping[str, float]) -> int:
    """How many tasks needing `need` fit in `have` at once (Ray resource names); ValueError when not one does.

    Why fail at once: Ray would queue a task larger than the whole cluster forever.
    """
    need = {k: v for k, v in need.items() if v > 0}
    short = {k: (v, have.get(k, 0.0)) for k, v in need.items() if v > have.get(k, 0.0)}
    if short:
        raise ValueError("a task asks for more than the cluster has: "
                         + ", ".join(f"{k} {v:g} > {h:g}" for k, (v, h) in short.items()))
    # the small epsilon keeps 1.0 / 0.5 at 2 despite float rounding of Ray's fractional resources
    return max(1, min((int(have[k] / v + 1e-9) for k, v in need.items()), default=1))


def run_tasks(tasks: Sequence[T], fn: Callable[[T], Mapping[str, bytes]], dest: Path, *, address: str,
              single_node: bool = False, num_gpus_per_task: float = 0, num_cpus_per_task: float = 1,
              memory_per_task: int | None = None, max_retries: int = 2, max_in_flight: int | None = None,
              is_done: Callable[[T], bool] | None = None, prepare: Callable[[T], T] | None = None,
              progress: bool = True, py_modules: Sequence[Path] = (), env_vars: Mapping[str, str] | None = None,
              detail: Mapping[str, str] | None = None, report: Report | None = None) -> Report:
    """Run `fn` on every task not yet done, as Ray tasks on the cluster at `address`; write results under `dest`.

    address: a running cluster ("127.0.0.1:<port>" of a ``LocalCluster``, "host:port" of a head, "auto").
    single_node: True for a ``LocalCluster`` (see ``ray_env.import_ray``).
    num_gpus_per_task / num_cpus_per_task / memory_per_task: Ray resources per task. A task with
        GPUs sees only its own in ``CUDA_VISIBLE_DEVICES`` and gets a fresh worker process
        (``max_calls=1``), so a run's CUDA memory is freed when it ends. Ray sets
        ``OMP_NUM_THREADS`` to the task's CPU count. `memory_per_task` (bytes of host RAM) only
        limits how many run at once; Ray does not cap a task's use of it.
    max_retries: extra attempts per task after its first failure (driver-side; see module doc).
    max_in_flight: tasks submitted at once; None = as many as fit in the cluster's resources now.
    is_done: a task already complete (skipped; default: all its markers exist under `dest`).
    prepare: called on a task at each submission; its result is what runs (same name and markers).
    py_modules: local package folders the workers import from (uploaded through the cluster's
        object store, so no shared filesystem is needed).
    env_vars: environment variables for the worker processes.
    detail: an extra line per task name for the failure message.
    report: a Report to fill as the sweep goes (so a caller still has it when the sweep is interrupted).
    Returns the Report; raises TasksFailed (after writing every success) if any task failed,
    ValueError for bad arguments or a task larger than the cluster, RuntimeError without Ray.
    """
    _check_tasks(tasks, max_retries)
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    with _Sweep(tasks, dest, max_retries, is_done, progress, report) as sweep:
        if not sweep.todo:
            return sweep.verdict(detail)
        ray = import_ray(single_node)
        if ray.is_initialized():
            raise RuntimeError("this process is already connected to Ray; run_tasks makes its own connection")
        runtime_env: dict[str, Any] = {}
        if py_modules:
            runtime_env["py_modules"] = [str(p) for p in py_modules]
        if env_vars:
            runtime_env["env_vars"] = dict(env_vars)
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        ray.init(address=address, runtime_env=runtime_env or None, logging_level="WARNING")
        try:
            if main:
                signal.signal(signal.SIGTERM, _interrupt)
            need = {"CPU": num_cpus_per_task, "GPU": num_gpus_per_task, "memory": memory_per_task or 0}
            fits = capacity(ray.cluster_resources(), need)
            _run_on_ray(ray, sweep, fn, need, max_in_flight or fits, prepare)
        finally:
            ray.shutdown()
            if main:
                signal.signal(signal.SIGTERM, previous)
    return sweep.verdict(detail)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM during a Ray sweep: raise KeyboardInterrupt, as Ctrl-C does, so the sweep unwinds (tasks
    cancelled, connection closed, a local cluster stopped) before the process ends.

    Why: ``ray.init`` replaces the SIGTERM handler with one that calls ``sys.exit``; a driver
    interrupted that way was seen (ray 2.60.0, torch imported) to end without running its cleanup.
    """
    raise KeyboardInterrupt(f"signal {signum}")


def _run_on_ray(ray: Any, sweep: _Sweep, fn: Callable[[Any], Mapping[str, bytes]], need: dict[str, float],
                limit: int, prepare: Callable[[Any], Any] | None) -> None:
    opts: dict[str, Any] = {"num_cpus": need["CPU"], "num_gpus": need["GPU"], "max_retries": 0,
                            "retry_exceptions": False}
    if need["GPU"] > 0:
        opts["max_calls"] = 1
    if need["memory"]:
        opts["memory"] = int(need["memory"])
    remote = ray.remote(**opts)(execute)
    fn_ref = ray.put(fn)  # serialised once, not once per task
    queue = deque(sweep.todo)
    pending: dict[Any, Any] = {}

    def fill() -> None:
        while queue and len(pending) < limit:
            task = queue.popleft()
            task = prepare(task) if prepare else task
            sweep.started(task.name)
            pending[remote.options(name=f"task:{task.name}").remote(fn_ref, task)] = task

    fill()
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            try:
                files, meta = ray.get(ref)
            except ray.exceptions.RayError as err:
                cause = getattr(err, "cause", None)
                text = (f"{type(cause).__name__}: {cause}" if cause is not None  # the function raised
                        else f"{type(err).__name__}: {_one_line(str(err))}")  # e.g. its worker process died
                if sweep.failed(task.name, text):
                    queue.appendleft(task)  # retried before the tasks not yet started
            else:
                sweep.succeeded(task, files, meta)
                del files
            fill()
    finally:
        for ref in pending:  # interrupted: stop what still runs; finished tasks are already written
            ray.cancel(ref, force=True)
