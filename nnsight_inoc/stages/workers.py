"""Several GPU workers sharing one run folder's finetune/drift runs.

Why claims instead of a fixed split: runs differ in length (drift generation depends on
how long the answers are) and workers start at different times, so a static shard
leaves GPUs idle. Each worker walks the same (condition, seed) list and takes the next
run nobody holds, by creating ``finetune/claims/<run>`` with ``os.mkdir`` (atomic on
one file system). A claim names its host and pid; a claim whose process is gone (a
crash, a timeout) is stale and is taken over, so a resumed campaign never waits on a
dead worker. A worker trains its run and then measures its drift at once, so a run is
complete (``train.json`` and ``drift.json``) as soon as possible; the summary and plots
come from ``cli.py drift`` once every run is done.

Processes, not threads: each worker owns one CUDA device through
``CUDA_VISIBLE_DEVICES``, exactly like a single-GPU run, so the numerics of a run do not
depend on how many workers there were.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.layout import OWNER
from nnsight_inoc.core.lock import pid_alive
from nnsight_inoc.core.progress import log, task
from nnsight_inoc.stages.executors import execute_run
from nnsight_inoc.stages.grouped import execute_seed_runs
from nnsight_inoc.stages.plan import build_plan
from nnsight_inoc.study import Study

ORPHAN_CLAIM_S = 60.0  # a claim folder without an owner file this old was left by a dead claimant
GROUPINGS = ("run", "seed")  # --worker-group: a worker claims and trains one run at a time, or a seed's runs grouped


def worker_grouping(config_executor: str) -> str:
    """A bare ``--worker``'s grouping: a seed's runs grouped under ``execution.executor = "grouped"`` (as before
    issue 25, which the GPU campaign's configs rely on), else one run at a time."""
    return "seed" if config_executor == "grouped" else "run"


def claim(claims: Path, name: str) -> bool:
    """Take run `name` for this process; False when a live process holds it."""
    claims.mkdir(parents=True, exist_ok=True)
    folder = claims / name
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        os.mkdir(folder)
    except FileExistsError:
        try:
            owner = json.loads((folder / OWNER).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            # Being written right now by the claimant (held), unless it is old: then the claimant died between
            # mkdir and writing its owner file, and leaving it would skip the run for good.
            if time.time() - folder.stat().st_mtime < ORPHAN_CLAIM_S:
                return False
            log(f"claim {name}: no owner file after {ORPHAN_CLAIM_S} s, taking over")
            A.write_json(folder / OWNER, me)
            return json.loads((folder / OWNER).read_text()) == me
        if owner.get("host") != me["host"] or pid_alive(int(owner["pid"])) or owner == me:
            return owner == me
        log(f"claim {name}: holder pid {owner['pid']} is gone, taking over")
        A.write_json(folder / OWNER, me)
        return json.loads((folder / OWNER).read_text()) == me
    A.write_json(folder / OWNER, me)
    return True


def run_worker(study: Study, which: str, only_seeds: Sequence[int] | None = None,
               grouping: str | None = None) -> list[str]:
    """The claim-based executor: train and measure drift for every run not complete and not held.

    Walks the plan seed-major (:meth:`FinetunePlan.seed_major`); returns the runs done here. With
    ``grouping="seed"`` (``finetune --worker --worker-group seed``) a worker claims every free run of a seed at
    once and trains them K at a time in one pass of the base (``execution.group_size``), each group's drift
    measured in one merged decode (:func:`~nnsight_inoc.stages.grouped.execute_seed_runs`), so a campaign cut
    short leaves whole seeds; ``"run"`` claims and trains one run at a time. ``None`` (a bare ``--worker``, as
    the GPU campaign starts them): ``"seed"`` under ``execution.executor = "grouped"``, else ``"run"``.
    """
    plan = build_plan(study, which)
    done: list[str] = []
    t0 = time.time()
    runs = plan.seed_major(only_seeds)
    grouping = grouping or worker_grouping(study.cfg.execution.executor)
    grouped = grouping == "seed"
    with task(f"worker sweep ({which})", len(runs)) as sweep:  # runs done here or elsewhere both count
        seeds = list(dict.fromkeys(r.seed for r in runs)) if grouped else []
        for seed in seeds:
            mine = [r for r in runs if r.seed == seed and not study.layout.run(r.condition, r.seed).drift_json.is_file()
                    and claim(study.layout.claims_dir, r.name)]
            if mine:
                execute_seed_runs(study, plan, mine, with_drift=True)
                done += [r.name for r in mine]
            sweep(sum(r.seed == seed for r in runs))
        for run in [] if grouped else runs:
            files = study.layout.run(run.condition, run.seed)
            if not files.drift_json.is_file() and claim(study.layout.claims_dir, run.name):
                execute_run(study, plan, run, with_drift=True)
                done.append(run.name)
            sweep(1)
    study.prov.stage(f"worker_{which}", time.time() - t0, runs=done, executor="workers", worker_group=grouping,
                     seeds=None if only_seeds is None else list(only_seeds))
    return done


def worker_commands(base: Sequence[str], gpus: Sequence[int]) -> list[tuple[list[str], dict[str, str]]]:
    """One (argv, env) per entry of `gpus`; a GPU listed twice gets two workers."""
    if not gpus:
        raise ValueError("--gpus needs at least one device index")
    if any(g < 0 for g in gpus):
        raise ValueError(f"device indices must be >= 0, got {list(gpus)}")
    out = []
    for i, g in enumerate(gpus):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(g), "NNSIGHT_INOC_WORKER": str(i)}
        out.append(([*base, "--worker"], env))
    return out


def launch(base: Sequence[str], gpus: Sequence[int], log_dir: Path) -> None:
    """Start the workers, wait for all, and fail loudly (with their log paths) if any failed."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    for i, (argv, env) in enumerate(worker_commands(base, gpus)):
        path = log_dir / f"worker{i}.log"
        with path.open("ab") as fh:
            procs.append((subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT), path))
        log(f"worker {i} on GPU {gpus[i]}: pid {procs[-1][0].pid}, log {path}")
    failed = [(p.wait(), path) for p, path in procs]
    bad = [f"{path} (exit {rc})" for rc, path in failed if rc != 0]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(procs)} finetune workers failed: " + "; ".join(bad))


def cli_base(which: str, opts: dict[str, Any], grouping: str | None = None) -> list[str]:
    """The worker's own command line: the same study options, minus the device (set by CUDA_VISIBLE_DEVICES),
    and the launcher's ``--worker-group`` (always given by ``--executor workers``, so no worker falls back to
    the config's)."""
    argv = [sys.executable, "-m", "nnsight_inoc.cli", "finetune", "--which", which]
    if grouping is not None:
        argv += ["--worker-group", grouping]
    flags = {"config_path": "--config", "preset": "--preset", "model": "--model", "dtype": "--dtype",
             "seed": "--seed", "run_dir": "--run-dir"}
    for key, flag in flags.items():
        if opts.get(key) is not None:
            argv += [flag, str(opts[key])]
    if opts.get("publish"):  # a switch: the workers write where their launcher was allowed to
        argv.append("--publish")
    return argv
