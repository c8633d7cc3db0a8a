"""``finetune``: one selector for the finetune plan's four executors, and the options that belong to each.

Why one selector (issue 25): the executor used to be chosen in three places (``--executor sequential|ray``,
``execution.executor = sequential|grouped`` and ``--gpus``), and the config's value silently changed what
``--executor sequential`` or ``--ray-group seed`` did. Now ``execution.executor`` names one of
:data:`EXECUTORS` and ``finetune --executor`` overrides it for one invocation (it is not written to the run
folder's config.toml); ``--gpus`` alone is shorthand for ``--executor workers --gpus``. Each option belongs to
one executor (:data:`OWNER`) and is refused, in one line (exit 2), for another. Whether a run trains alone or
with its seed's other runs grouped is the grouped executor itself, or the ``run|seed`` grouping of workers
(``--worker-group``) and Ray (``--ray-group``); ``execution.group_size`` sizes the groups and is refused, when
this invocation asks for it, where nothing is grouped. A bare ``finetune --worker`` (the process a campaign
or ``--executor workers`` starts) keeps the old reading: a seed's runs grouped under ``execution.executor =
"grouped"``. The choice and its options are recorded in provenance (stage ``finetune_executor_<which>``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from nnsight_inoc.cli.errors import handle_errors
from nnsight_inoc.cli.opening import command_line, opened, resolve
from nnsight_inoc.cli.options import WHICH, int_list, ray_options, study_options
from nnsight_inoc.core.runconfig import Resolved

# name -> what it does (one line each in `finetune --help`)
EXECUTORS = {
    "sequential": "one run at a time in this process",
    "grouped": "a seed's runs K per pass of the shared base, in this process (execution.group_size)",
    "workers": "one claim-worker process per --gpus device (--worker-group run|seed)",
    "ray": "Ray tasks (--ray-address|--ray-local-gpus|--ray-local-cpus, --ray-group run|seed, --ray-*)",
}
GROUPINGS = ("run", "seed")
RAY_PARAMS = ("ray_address", "ray_local_gpus", "ray_local_cpus", "ray_gpus_per_task", "ray_cpus_per_task",
              "ray_memory_gb", "ray_retries", "ray_group", "ray_in_flight")
OWNER = {"gpus": "workers", "worker_group": "workers", **{p: "ray" for p in RAY_PARAMS}}  # option -> its executor


def flag(param: str) -> str:
    return "--" + param.replace("_", "-")


@dataclass(frozen=True)
class Choice:
    """The executor one ``finetune`` invocation runs, what chose it, and its options (as provenance records them).

    ``grouping``: ``seed`` when a seed's runs train grouped (the grouped executor, ``--worker-group seed``,
    ``--ray-group seed``), ``run`` when each run trains alone.
    """

    executor: str
    chosen_by: str
    grouping: str
    options: dict[str, Any] = field(default_factory=dict)


def choose(executor: str | None, given: Sequence[str], values: dict[str, Any], r: Resolved, *,
           worker: bool = False) -> Choice:
    """The executor of this invocation; click.UsageError (one line, exit 2) for an option of another executor.

    ``executor``: ``--executor`` or None; ``given``: the parameters named on the command line; ``values``:
    every selector option's value (``gpus``, ``worker_group``, ``ray_*``); ``worker``: ``--worker``.
    """
    ex = r.cfg.execution
    origin = r.origins.get("execution.executor") or (
        "the run folder's config.toml" if r.has_folder_config else "the default")
    if worker:
        if executor not in (None, "workers"):
            raise click.UsageError(f"--worker is a process of the workers executor; it takes no --executor {executor}")
        if "gpus" in given:
            raise click.UsageError("--gpus starts workers; a worker itself takes no --gpus")
        name, by = "workers", "--worker"
    elif executor is not None:
        name, by = executor, "--executor"
    elif "gpus" in given:
        if ex.executor not in ("sequential", "workers"):
            raise click.UsageError(
                f"--gpus alone means --executor workers, but execution.executor is {ex.executor!r} ({origin}): "
                "name the executor, e.g. --executor workers --gpus ... --worker-group seed (each worker trains a "
                "seed's runs grouped)")
        name, by = "workers", "--gpus"
    else:
        name, by = ex.executor, f"execution.executor, {origin}"
    foreign = [p for p in given if OWNER.get(p, name) != name]
    if foreign:
        owners = ", ".join(f"{flag(p)} is an option of --executor {OWNER[p]}" for p in foreign)
        raise click.UsageError(f"{owners}; the executor here is {name!r} (from {by})")
    options: dict[str, Any] = {}
    if name == "workers":
        from nnsight_inoc.stages.workers import worker_grouping

        grouping = values.get("worker_group") or (worker_grouping(ex.executor) if worker else "run")
        if worker:
            options = {"worker_group": grouping, "seeds": values.get("seeds")}
        elif values.get("gpus") is None:
            raise click.UsageError(f"the workers executor (from {by}) needs --gpus: the CUDA devices, one worker "
                                   "each (0,1; list a device twice for two workers on it)")
        else:
            options = {"gpus": values["gpus"], "worker_group": grouping}
    elif name == "ray":
        grouping = values.get("ray_group") or "run"  # the rest of its options: RayOptions, in _ray
    else:
        grouping = "seed" if name == "grouped" else "run"
    if grouping == "seed":
        options["group_size"] = ex.group_size
        options["activation_checkpointing"] = ex.activation_checkpointing
    else:
        for key, value, off in (("group_size", ex.group_size, 0),
                                ("activation_checkpointing", ex.activation_checkpointing, "none")):
            if value != off and f"execution.{key}" in r.origins:
                raise click.UsageError(
                    f"execution.{key} = {value!r} ({r.origins[f'execution.{key}']}) applies to grouped training, "
                    f"which the {name} executor (from {by}) does not do here: use --executor grouped, --worker-group "
                    "seed or --ray-group seed, or leave the key out")
    return Choice(name, by, grouping, options)


@contextlib.contextmanager
def recorded(study: Any, which: str, choice: Choice, t0: float) -> Iterator[None]:
    """Record the executor, what chose it and its options in provenance (``finetune_executor_<which>``)."""
    ok = False
    try:
        yield
        ok = True
    finally:
        study.prov.stage(f"finetune_executor_{which}", time.time() - t0, executor=choice.executor,
                         chosen_by=choice.chosen_by, options=choice.options, completed=ok)


def _help() -> str:
    width = max(map(len, EXECUTORS))
    lines = "\n".join(f"  {n.ljust(width)}  {d}" for n, d in EXECUTORS.items())
    return ("LoRA finetune per condition x seed, probing cos(-g, v) during training (resumable).\n\n"
            "One of four executors runs the plan (--executor, default execution.executor); a run's numbers do "
            "not depend on which (equal, grouped to fp32 round-off). Each option below marked [workers] or "
            "[ray] belongs to that executor and is refused for another.\n\n\b\n" + lines + "\n")


@click.command("finetune", help=_help())
@WHICH
@click.option("--executor", type=click.Choice(list(EXECUTORS)),
              help="sequential: one run at a time here; grouped: a seed's runs K per pass of the base here; "
                   "workers: a claim-worker process per --gpus device; ray: Ray tasks (--ray-*) "
                   "[default: execution.executor].")
@click.option("--gpus", callback=int_list,
              help="[workers] One worker per listed CUDA device (0,1,2,3; list a device twice for two workers on "
                   "it); alone, shorthand for --executor workers --gpus. Each worker trains a run and measures its "
                   "drift; the summary follows.")
@click.option("--worker-group", type=click.Choice(GROUPINGS),
              help="[workers] run: a worker claims and trains one run at a time; seed: a seed's free runs at once, "
                   "trained grouped (execution.group_size) [run; a bare --worker: seed under execution.executor = "
                   "'grouped'].")
@click.option("--worker", is_flag=True,
              help="[workers] Run as one worker process (what --gpus and a campaign start): claim runs not held by "
                   "a live process, train each and measure its drift.")
@click.option("--seeds", "only_seeds", callback=int_list,
              help="With --worker: only these of finetune.seeds (e.g. 0 or 1,2), so a campaign can order a sweep's "
                   "first seed before another study. Workers take runs seed-major either way.")
@ray_options
@study_options
@handle_errors
def finetune(which: str | None, executor: str | None, gpus: list[int] | None, worker_group: str | None,
             worker: bool, only_seeds: list[int] | None, **opts: Any) -> None:
    t0 = time.time()
    ctx = click.get_current_context()
    ray_flags = {k: opts.pop(k) for k in RAY_PARAMS}
    values = {"gpus": gpus, "worker_group": worker_group, "seeds": only_seeds, **ray_flags}
    given = [k for k in OWNER if ctx.get_parameter_source(k).name == "COMMANDLINE"]
    if only_seeds is not None and not worker:
        raise click.UsageError("--seeds applies to a --worker only (the other modes train every configured seed)")
    r = resolve(opts)
    choice = choose(executor, given, values, r, worker=worker)
    which = which or r.cfg.finetune.which
    if choice.executor == "ray":
        _ray(which, choice, ray_flags, ctx.get_parameter_source("ray_address").name == "ENVIRONMENT", opts, t0)
    elif choice.executor == "workers" and not worker:
        _launch_workers(which, choice, gpus or [], r, opts, t0)
    elif worker:
        from nnsight_inoc.stages.workers import run_worker

        with opened(opts, f"worker{os.environ.get('NNSIGHT_INOC_WORKER', os.getpid())}", shared=True,
                    needs="finetune") as study:
            run_worker(study, which, only_seeds, grouping=choice.grouping)  # records the worker's own stage
    else:
        from nnsight_inoc.stages.executors import run_sequential
        from nnsight_inoc.stages.grouped import run_grouped

        with opened(opts, needs="finetune") as study, recorded(study, which, choice, t0):
            (run_grouped if choice.executor == "grouped" else run_sequential)(study, which)


def _ray(which: str, choice: Choice, ray_flags: dict[str, Any], address_from_env: bool, opts: dict[str, Any],
         t0: float) -> None:
    from nnsight_inoc.stages.ray_exec import RayOptions, run_finetune_ray

    try:
        ray = RayOptions.from_flags(ray_flags, address_from_env=address_from_env)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    choice = dataclasses.replace(choice, options={**choice.options, **dataclasses.asdict(ray)})
    with opened(opts, weights=False, needs="finetune") as study, recorded(study, which, choice, t0):  # tasks load it
        run_finetune_ray(study, which, ray)


def _launch_workers(which: str, choice: Choice, gpus: list[int], r: Resolved, opts: dict[str, Any],
                    t0: float) -> None:
    from nnsight_inoc.core.layout import RunLayout
    from nnsight_inoc.core.lock import run_folder_lock
    from nnsight_inoc.core.stage_inputs import check_inputs
    from nnsight_inoc.stages.drift import run_drift
    from nnsight_inoc.stages.workers import cli_base, launch
    from nnsight_inoc.study import preflight

    preflight(r.cfg, r.run_dir, origins=r.origins)
    check_inputs(r.run_dir, "finetune")
    if r.cfg.backend.kind == "remote":
        raise click.UsageError("LoRA training is local only; the workers executor needs --backend local")
    layout = RunLayout(r.run_dir)
    if not layout.sft_completions.is_file():  # else every worker would generate them at once
        raise click.UsageError(f"{layout.sft_completions} is missing: run `align` first (it makes them)")
    with run_folder_lock(r.run_dir, command_line(), shared=True):  # shared with its workers, not other stages
        launch(cli_base(which, opts, choice.grouping), gpus, layout.logs_dir)
    with opened(opts) as study, recorded(study, which, choice, t0):
        run_drift(study, which)  # every run has drift.json by now: this writes the summary and plots
