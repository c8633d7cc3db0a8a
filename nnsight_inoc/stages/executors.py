"""Executors of the finetune plan: what every executor does per run, and the sequential executor.

:func:`execute_run` is the one per-run sequence (skip a finished run, refuse one trained with
another config, train, free memory, optionally measure drift at once). The sequential
executor (:func:`run_sequential`) walks the plan in order in this process; the claim-based
workers (:mod:`.workers`) walk it seed-major across processes; both call :func:`execute_run`. The
grouped executor (:mod:`.grouped`) trains the runs of a seed together. Which one runs is chosen once, by
``execution.executor`` or ``finetune --executor`` (:mod:`nnsight_inoc.cli.finetune`).
"""

from __future__ import annotations

import time
from typing import Any

from nnsight_inoc.core.errors import UsageProblem
from nnsight_inoc.core.progress import log, task
from nnsight_inoc.stages.drift import drift_run
from nnsight_inoc.stages.finetune import (
    check_run,
    free_memory,
    needs_training,
    train_run,
)
from nnsight_inoc.stages.grouped import run_grouped
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec, build_plan
from nnsight_inoc.study import Study


def execute_run(study: Study, plan: FinetunePlan, run: RunSpec, *, with_drift: bool) -> dict[str, Any]:
    """Bring one run to "trained" (and "drift measured" with ``with_drift``); returns its train.json record.

    A run that has train.json (and its adapter or drift.json) is reused after checking that it
    was trained with this config, prompt and steering; one whose adapter was lost before its
    drift was measured is trained again.
    """
    files = study.layout.run(run.condition, run.seed)
    if not needs_training(files):
        rec = check_run(study, files, run)
        log(f"finetune {run.name}: already trained, reusing")
    else:
        if files.train_json.is_file():
            log(f"finetune {run.name}: train.json without its adapter or drift.json, training again")
        rec = train_run(study, plan, run)
        free_memory()
    if with_drift:
        drift_run(study, plan, run)
    return rec


def run_finetune(study: Study, which: str = "all") -> list[dict[str, Any]]:
    """Train every run of the plan not yet trained with the configured in-process executor (``execution.executor``).

    ``sequential``: :func:`run_sequential`; ``grouped``: :func:`.grouped.run_grouped`. ``workers`` and ``ray``
    need their command-line options (``finetune --executor workers --gpus ...`` / ``--executor ray ...``), so
    here they are a usage error. Returns the runs' train.json records.
    """
    executor = study.cfg.execution.executor
    if executor == "grouped":
        return run_grouped(study, which)
    if executor != "sequential":
        raise UsageProblem(f"execution.executor = {executor!r} runs from `cli.py finetune --executor {executor}` "
                           "with its options; this command trains in its own process (sequential or grouped)")
    return run_sequential(study, which)


def run_sequential(study: Study, which: str = "all") -> list[dict[str, Any]]:
    """The sequential executor: one run at a time, in plan order; returns the runs' train.json records."""
    t0 = time.time()
    plan = build_plan(study, which)
    done = []
    with task(f"finetune sweep ({which})", len(plan.runs)) as sweep:  # one overall bar; each run has its own
        for run in plan.runs:
            done.append(execute_run(study, plan, run, with_drift=False))
            sweep(1)
    study.prov.stage(f"finetune_{which}", time.time() - t0, runs=len(done))
    return done
