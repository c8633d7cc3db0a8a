"""The Ray executor of the finetune plan: one Ray task per run, or per seed's group of runs.

The driver (``finetune --executor ray``) builds the plan once, as the other executors do
(:mod:`.executors` sequential, :mod:`.workers` claim-based), and sends it to the cluster with the
study's config. Each task runs on a worker process that opens the study from that config in a
scratch folder (its own model copy: the same hash-pinned preset, or the same folder, on that
node; checked against the driver's sha256), runs :func:`~.executors.execute_run` for each of its
runs (train, then drift), or, for a seed's group (``--ray-group seed``),
:func:`~.grouped.execute_seed_runs` (K runs per pass of the shared base, each group's drift in one
batched decode), and returns the files it made as bytes: ``train.json``, ``drift.json``,
the adapter, and the ``finetune/pre`` cache entries it computed. The driver writes them into the
run folder through :func:`~nnsight_inoc.cluster.ray_tasks.run_tasks` (atomic writes, the adapter
first, then ``train.json``, then ``drift.json`` as the completion marker), so no filesystem is
shared and a run's files depend on the plan alone (tested: every number equal to the sequential
executor's and the claim workers'). After the sweep the driver writes the drift summary as
the workers executor does.

What a task starts from (``RunGroup.given``, filled in at each submission): the ``finetune/pre``
entries the driver has by then, so the base model's behaviour under a prompt is measured once per
wave of tasks instead of once per run; and, for a run trained before but not measured (train.json
and its adapter, no drift.json), those files, so that run is only measured. A run with both
train.json and drift.json is done and skipped (after the same config check as the sequential
executor). The driver itself never runs the model: it opens the study without weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnsight_inoc.cluster.local import LocalCluster, sigterm_as_exit
from nnsight_inoc.cluster.ray_tasks import Report, run_tasks
from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import StudyConfig, apply_overrides
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.core.progress import log
from nnsight_inoc.stages.drift import run_drift
from nnsight_inoc.stages.executors import execute_run
from nnsight_inoc.stages.finetune import check_run, needs_training
from nnsight_inoc.stages.grouped import execute_seed_runs
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec, build_plan
from nnsight_inoc.study import Study, open_study, sft_available

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # shipped to the workers (runtime_env py_modules)
GROUPINGS = ("run", "seed")
# Host memory a CPU-only task reserves, as a multiple of the weights' bytes: the base model and the
# run's deep copy live at once (train.lora.make_lora_model, load_trained); the third copy is headroom
# for activations, optimizer state and generation. GPU tasks reserve none: their GPU bounds them.
CPU_TASK_MEMORY_FACTOR = 3
# A task's scratch run folder under the worker's temp dir: SCRATCH_PREFIX + "<pid>_<task name>." + random letters.
# The pid lets the next task remove the folders of dead processes, and lets an operator find (and, in the
# kill-and-retry check of gpu/ray_check.sh, kill) the worker process that runs a given task.
SCRATCH_PREFIX = "nnsight_inoc_task_"


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray tasks run (the ``--ray-*`` flags). Exactly one of the three cluster choices.

    address: an existing cluster ("host:port" of its head, "auto", "ray://host:10001").
    local_gpus: start a one-node cluster on this host with these CUDA devices.
    local_cpus: start a CPU-only one-node cluster with this many worker slots.
    gpus_per_task: GPUs per task (0.5 = two runs per GPU); default 1, or 0 with ``model.device = "cpu"``
        or a CPU-only local cluster.
    cpus_per_task: CPUs per task (Ray sets OMP_NUM_THREADS to it); default 1, or on a local GPU
        cluster the host's cores shared by the tasks that fit at once.
    memory_gb: host memory per task in GB (1e9 bytes); default: none for GPU tasks,
        ``CPU_TASK_MEMORY_FACTOR`` x the weights' bytes for CPU tasks.
    retries: extra attempts of a failed task before it is reported: whether its function raised or its worker
    process died (killed, OOM-killed, crashed: Ray's ``WorkerCrashedError``); the driver resubmits it
    (``cluster.ray_tasks``), the new attempt starts in a fresh scratch folder, and the run folder only ever
    gets a finished attempt's files. Recorded in provenance (``finetune_executor_<which>``'s options and
    ``finetune_ray_<which>``'s ``max_retries``, beside each task's attempts and errors). grouping: ``run`` (one task per
    run) or ``seed`` (one task per seed's runs, trained grouped: K per pass of the shared base,
    ``execution.group_size``; whatever ``execution.executor`` says). in_flight: tasks submitted at once (default: what fits now).
    """

    address: str | None = None
    local_gpus: tuple[int, ...] | None = None
    local_cpus: int | None = None
    gpus_per_task: float | None = None
    cpus_per_task: float | None = None
    memory_gb: float | None = None
    retries: int = 2
    grouping: str = "run"
    in_flight: int | None = None

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any], address_from_env: bool) -> RayOptions:
        """From the CLI's ``ray_*`` values. RAY_ADDRESS from the environment yields to a local cluster asked for."""
        f = {k.removeprefix("ray_"): v for k, v in flags.items()}
        local = f["local_gpus"] is not None or f["local_cpus"] is not None
        return cls(address=None if address_from_env and local else f["address"],
                   local_gpus=None if f["local_gpus"] is None else tuple(f["local_gpus"]), local_cpus=f["local_cpus"],
                   gpus_per_task=f["gpus_per_task"], cpus_per_task=f["cpus_per_task"], memory_gb=f["memory_gb"],
                   retries=f["retries"], grouping=f["group"], in_flight=f["in_flight"])

    def __post_init__(self) -> None:
        chosen = [n for n, v in (("--ray-address", self.address), ("--ray-local-gpus", self.local_gpus),
                                 ("--ray-local-cpus", self.local_cpus)) if v is not None]
        if len(chosen) != 1:
            raise ValueError("the Ray executor needs exactly one of --ray-address (or RAY_ADDRESS), "
                             f"--ray-local-gpus, --ray-local-cpus; got {chosen or 'none'}")
        if self.local_cpus is not None and self.local_cpus < 1:
            raise ValueError(f"--ray-local-cpus must be >= 1, got {self.local_cpus}")
        if self.local_gpus is not None and (not self.local_gpus or len(set(self.local_gpus)) != len(self.local_gpus)):
            raise ValueError(f"--ray-local-gpus must list distinct devices, got {list(self.local_gpus)}; "
                             "for several runs per GPU use --ray-gpus-per-task 0.5")
        if self.retries < 0 or (self.in_flight is not None and self.in_flight < 1):
            raise ValueError(f"need --ray-retries >= 0 and --ray-in-flight >= 1, got {self.retries}, {self.in_flight}")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {self.grouping!r}")
        for name, v in (("--ray-gpus-per-task", self.gpus_per_task), ("--ray-cpus-per-task", self.cpus_per_task),
                        ("--ray-memory-gb", self.memory_gb)):
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")


@dataclass(frozen=True)
class RunGroup:
    """One Ray task: runs of the plan trained and measured one after another in one worker process.

    ``markers`` are the files written last, in order (every train.json the task makes, then every
    drift.json); ``given`` the files the task's scratch folder starts with (see the module doc).
    """

    name: str
    runs: tuple[RunSpec, ...]
    markers: tuple[str, ...]
    given: Mapping[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RunTask:
    """What every Ray task runs (picklable; sent to the cluster once per sweep, with the plan)."""

    cfg: StudyConfig
    plan: FinetunePlan
    device: str  # "cuda" (the task's own GPU), "cpu", or "auto" (see task_resources)
    model_sha256: str | None  # the driver's weights; the worker's must match
    grouped: bool = False  # --ray-group seed: a seed's runs K per pass of the shared base

    def __call__(self, group: RunGroup) -> dict[str, bytes]:
        return run_group(self.cfg, self.plan, group, self.device, self.model_sha256, grouped=self.grouped)


def _rel(layout: RunLayout, path: Path) -> str:
    return path.relative_to(layout.root).as_posix()


def run_group(cfg: StudyConfig, plan: FinetunePlan, group: RunGroup, device: str,
              model_sha256: str | None, *, grouped: bool = False) -> dict[str, bytes]:
    """Train and measure a group's runs in a scratch run folder; return the files made, relative to the run folder.

    Runs on a Ray worker. ``grouped``: a group of several runs (a seed's) trains K at a time in one pass of the
    shared base, each group's drift in one merged decode; else one run after another.
    ValueError when this node's model is not the driver's (sha256).
    """
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU task on a GPU host must not take memory on a GPU
    elif device == "auto":
        _check_auto_device(group.name)
    cfg = apply_overrides(cfg, {"model.device": device})  # "cuda" = the one device Ray gave this task
    _remove_orphans()
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}_{group.name}.") as tmp:
        layout = RunLayout(Path(tmp))
        for rel, data in group.given.items():
            A.write_bytes(layout.root / rel, data)
        study = open_study(cfg, layout.root, f"ray task {group.name}")
        if study.loaded.sha256 != model_sha256:
            raise ValueError(f"the model {cfg.model.name!r} on this node has sha256 {study.loaded.sha256}, the "
                             f"driver's {model_sha256}: every node must have the same weights")
        if grouped and len(group.runs) > 1:  # a seed's runs, K per pass of the base
            execute_seed_runs(study, plan, group.runs, with_drift=True)
        else:
            for run in group.runs:
                execute_run(study, plan, run, with_drift=True)
        out: dict[str, bytes] = {}
        made = [p for r in group.runs for p in sorted(layout.run(r.condition, r.seed).folder.rglob("*"))]
        for p in made + sorted(layout.pre_dir.glob("*.json")):
            rel = _rel(layout, p)
            if p.is_file() and (data := p.read_bytes()) != group.given.get(rel):
                out[rel] = data
        return out


CPU_REHEARSAL_ENV = "NNSIGHT_INOC_RAY_CPU_REHEARSAL"  # "1": GPU shares Ray was only told about may run on the CPU


def _check_auto_device(name: str) -> None:
    """On the worker: a GPU task under ``model.device = "auto"`` must see a CUDA device, unless this is a CPU rehearsal.

    Ray gave the task GPU share(s); a process that sees no CUDA device is either a node whose CUDA is broken (a
    sweep's runs would silently move to the CPU and its precision: refused, RuntimeError) or the CPU rehearsal of a
    GPU sweep (``ray start --num-gpus 1`` on a CPU host), which says so with ``NNSIGHT_INOC_RAY_CPU_REHEARSAL=1`` in
    the driver's environment and is logged.
    """
    import torch

    if torch.cuda.is_available():
        return
    where = f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
    if os.environ.get(CPU_REHEARSAL_ENV) != "1":
        raise RuntimeError(f"ray task {name}: Ray gave it GPU share(s) ({where}) but torch sees no CUDA device; "
                           f"refusing to train it on the CPU (set {CPU_REHEARSAL_ENV}=1 for a CPU rehearsal)")
    log(f"ray task {name}: Ray gave it GPU share(s) ({where}) but torch sees no CUDA device: running on the CPU "
        f"({CPU_REHEARSAL_ENV}=1)")


def _remove_orphans() -> None:
    """Remove scratch folders left by task processes that no longer exist (killed by a cancel or a crash).

    Why: a worker killed mid-task (``ray.cancel(force=True)`` on an interrupted sweep) never runs
    its ``TemporaryDirectory`` cleanup, and a run's folder holds its adapter (37 MB for the study model).
    """
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*_*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).split("_", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def _run_state(study: Study, run: RunSpec) -> str:
    """``done`` (train.json and drift.json), ``measure`` (trained, adapter kept, drift to come) or ``train``.

    A trained run is checked against this config, prompt and steering, as the sequential executor does.
    """
    files = study.layout.run(run.condition, run.seed)
    if files.train_json.is_file() and not needs_training(files):
        check_run(study, files, run)
        return "done" if files.drift_json.is_file() else "measure"
    if files.train_json.is_file():
        log(f"finetune {run.name}: train.json without its adapter or drift.json, training again")
    return "train"


def build_groups(study: Study, plan: FinetunePlan, grouping: str) -> tuple[list[RunGroup], list[str]]:
    """The tasks of the runs not done (seed-major, as the claim workers take them), and the names of those done."""
    layout, todo, done = study.layout, {}, []
    for run in plan.seed_major():
        state = _run_state(study, run)
        if state == "done":
            done.append(run.name)
            continue
        key = run.name if grouping == "run" else f"seed{run.seed}"
        todo.setdefault(key, []).append((run, state))
    groups = []
    for name, items in todo.items():
        files = [layout.run(r.condition, r.seed) for r, _ in items]
        trains = tuple(_rel(layout, f.train_json) for f, (_, s) in zip(files, items) if s == "train")
        groups.append(RunGroup(name, tuple(r for r, _ in items), trains + tuple(_rel(layout, f.drift_json)
                                                                                 for f in files)))
    return groups, done


def prepare(study: Study, group: RunGroup) -> RunGroup:
    """The group with what the driver has now: every finetune/pre entry, and each trained run's files."""
    layout = study.layout
    given = {_rel(layout, p): p.read_bytes() for p in sorted(layout.pre_dir.glob("*.json"))}
    for run in group.runs:
        files = layout.run(run.condition, run.seed)
        if _rel(layout, files.train_json) not in group.markers:  # trained before: ship it to be measured
            given |= {_rel(layout, p): p.read_bytes() for p in sorted(files.folder.rglob("*")) if p.is_file()}
    return dataclasses.replace(group, given=given)


def _weight_bytes(study: Study) -> int:
    return sum(p.numel() * p.element_size() for p in study.loaded.hf_model.parameters())


def task_resources(study: Study, opts: RayOptions) -> tuple[float, float, int | None, str]:
    """(GPUs, CPUs, host memory bytes or None, worker device) per task; ValueError for a contradiction.

    The worker device of a GPU task is ``model.device`` when it names CUDA, and ``auto`` when it says so: resolved
    in the worker process, where Ray's ``CUDA_VISIBLE_DEVICES`` shows the task's GPU. A worker that sees no CUDA
    device is refused there, unless the driver's environment has ``NNSIGHT_INOC_RAY_CPU_REHEARSAL=1`` (a CPU host
    told it has a GPU: the rehearsal, :func:`_check_auto_device`).
    """
    device = study.cfg.model.device
    gpus = opts.gpus_per_task
    if gpus is None:
        gpus = 0.0 if device == "cpu" or opts.local_cpus is not None else 1.0
    if gpus == 0 and device.startswith("cuda"):
        raise ValueError(f"model.device is {device!r} but the Ray tasks get no GPU (--ray-gpus-per-task 0)")
    if gpus > 0 and device == "cpu":
        raise ValueError("model.device is 'cpu' but --ray-gpus-per-task asks for GPUs; use --device auto or cuda")
    cpus = opts.cpus_per_task
    if cpus is None:
        cpus = 1.0
        if opts.local_gpus is not None and gpus > 0:  # the host's cores, shared by the tasks that fit at once
            cpus = float(max(1, (os.cpu_count() or 1) // max(1, int(len(opts.local_gpus) / gpus + 1e-9))))
    if opts.memory_gb is not None:
        memory = int(opts.memory_gb * 1e9) or None
    else:
        memory = CPU_TASK_MEMORY_FACTOR * _weight_bytes(study) if gpus == 0 else None
    return gpus, cpus, memory, ("auto" if device == "auto" else "cuda") if gpus > 0 else "cpu"


@contextlib.contextmanager
def _cluster(opts: RayOptions, cpus_per_task: float) -> Iterator[tuple[str, LocalCluster | None]]:
    """The cluster's address: the given one, or a local cluster started here and stopped by PID after."""
    if opts.address is not None:
        yield opts.address, None
        return
    if opts.local_gpus is not None:
        slots = max(int(os.cpu_count() or 1), int(cpus_per_task))
        cluster = LocalCluster(num_cpus=slots, gpu_ids=opts.local_gpus)
    else:
        cluster = LocalCluster(num_cpus=int(opts.local_cpus or 1))
    with sigterm_as_exit(), cluster:
        log(f"ray: local cluster at {cluster.address} ({cluster.num_cpus} CPUs, GPUs {opts.local_gpus or 'none'}), "
            f"up in {cluster.start_seconds:.1f} s")
        yield cluster.address, cluster


def run_finetune_ray(study: Study, which: str, opts: RayOptions) -> Report:
    """Train and measure every run of ``finetune --which <which>`` not done, on Ray; then the drift summary.

    ``study`` may be opened without weights. Raises TasksFailed (naming each failed run, after
    writing every finished one) when a task failed all its attempts; the summary is then not
    written (a rerun resumes; ``drift --summary-only`` summarises what finished).
    """
    t0 = time.time()
    if not sft_available(study):
        raise FileNotFoundError(f"{study.layout.sft_completions} (the SFT answers for this model and data) is "
                                "missing: run `align` first (it makes them)")
    plan = build_plan(study, which)
    groups, done = build_groups(study, plan, opts.grouping)
    gpus, cpus, memory, device = task_resources(study, opts)
    detail = {g.name: "runs: " + ", ".join(r.name for r in g.runs) for g in groups if len(g.runs) > 1}
    record: dict[str, Any] = {"runs_done_before": done, "tasks": [g.name for g in groups], "grouping": opts.grouping,
                              "max_retries": opts.retries,
                              "per_task": {"num_gpus": gpus, "num_cpus": cpus, "memory_bytes": memory}}
    report = Report()
    if not groups:
        log(f"finetune (ray): all {len(done)} runs of {which!r} are done")
    else:
        log(f"finetune (ray): {len(groups)} task(s) for {sum(len(g.runs) for g in groups)} runs; "
            f"{len(done)} runs done before; per task {gpus:g} GPU, {cpus:g} CPU"
            + (f", {memory / 1e9:.3g} GB host memory" if memory else ""))
        task = RunTask(study.cfg, plan, device, study.loaded.sha256, grouped=opts.grouping == "seed")
        try:
            with _cluster(opts, cpus) as (address, cluster):
                try:
                    report = run_tasks(groups, task, study.run_dir, address=address, single_node=cluster is not None,
                                       num_gpus_per_task=gpus, num_cpus_per_task=cpus, memory_per_task=memory,
                                       max_retries=opts.retries, max_in_flight=opts.in_flight,
                                       prepare=lambda g: prepare(study, g), py_modules=[PACKAGE_DIR], detail=detail,
                                       report=report)
                finally:
                    record["cluster"] = cluster.describe() if cluster else {"address": address}
        finally:
            record |= {"done": report.done, "failed": report.failed, "attempts": report.attempts,
                       "errors": report.errors, "workers": report.workers}
            study.prov.stage(f"finetune_ray_{which}", time.time() - t0, **record)
    run_drift(study, which)  # every run has drift.json now: this writes the summary and plots
    return report
