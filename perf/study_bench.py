"""The study's own clock: the whole study on one GPU (or two), each stage timed.

Issue 17's target is the ALL-CAPS study (load, extract, SFT completions, align with controls,
48 LoRA runs with probes, drift, report) in 10 minutes on one H200. This runs exactly those
stages with the configured executor (``[execution]``; ``grouped`` trains the runs of a seed
together) into a run folder that holds only its ``data/`` (build it where the hub is reachable:
``cli.py data build``; a folder with more is refused) and writes the wall time of each stage, the group
size used and the card, commit and versions to ``--out``.

With two GPUs (``--gpus 0,1``) stages that do not depend on each other overlap: one process
(GPU 0) runs extract, the SFT completions and align, then trains the loss-matched runs, whose
prompt align chooses; the other (GPU 1) starts training every other run as soon as the
direction and the SFT completions exist. The drift summary and the report follow.

    PYTHONPATH=. python perf/study_bench.py --config gpu/allcaps_gpu.toml --run-dir RUN --out OUT.json [--gpus 0,1]

Issue 24's clock of the decisive campaign (both traits, one GPU, with the anchors):

    PYTHONPATH=. python perf/study_bench.py --config gpu/decisive_allcaps.toml --run-dir RUN_A \\
        --also gpu/decisive_spanish.toml RUN_S --anchors --out OUT.json

Each study's per-run cost (LoRA steps / probes / drift, medians) is read from its folder's files
(``perf/campaign_clock.py``); ``--anchors`` adds the card's matmul rate, the achieved FLOP rate of the
training steps and the grouped step against one PEFT run (``perf/anchors.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

ROLES = ("all", "prep", "train")


def _study(config_path: str, run_dir: Path, role: str) -> Any:
    from nnsight_inoc.core.config import load_config
    from nnsight_inoc.study import open_study

    # The process that runs extract and align keeps the run folder's own provenance.json (the report reads it);
    # the others keep files of their own.
    label = None if role in ("all", "prep") else f"study_bench_{role}"
    return open_study(load_config(config_path), run_dir, " ".join(sys.argv), provenance=label)


def _timed(times: dict[str, float], name: str, fn: Any) -> Any:
    t0 = time.time()
    out = fn()
    times[name] = round(time.time() - t0, 2)
    click.echo(f"[study_bench] {name}: {times[name]:.1f} s", err=True)
    return out


def run_role(config_path: str, run_dir: Path, role: str) -> dict[str, Any]:
    """One process's share of the study; returns its stage times (seconds) and what the finetune used."""
    from nnsight_inoc.core.config import LOSSMATCH_CONDITION
    from nnsight_inoc.stages.align import run_align
    from nnsight_inoc.stages.drift import run_drift
    from nnsight_inoc.stages.extract import run_extract
    from nnsight_inoc.stages.grouped import run_grouped
    from nnsight_inoc.study import ensure_sft

    times: dict[str, float] = {}
    t0 = time.time()
    study = _timed(times, "load_model", lambda: _study(config_path, run_dir, role))
    which = study.cfg.finetune.which
    if role in ("all", "prep"):
        _timed(times, "extract", lambda: run_extract(study))
        _timed(times, "sft_completions", lambda: ensure_sft(study))
        (study.run_dir / "study_bench.ready").write_text(str(os.getpid()))
        _timed(times, "align", lambda: run_align(study, "all"))
    if role == "all":
        records = _timed(times, "finetune_and_drift", lambda: run_grouped(study, which, with_drift=True))
        _timed(times, "drift_summary", lambda: run_drift(study, which))
        if study.cfg.transfer.enabled:  # measured at the PEFT init: after training here, as the campaign's
            from nnsight_inoc.stages.transfer import run_transfer  # CAMPAIGN_TRANSFER=after does

            _timed(times, "transfer", lambda: run_transfer(study))
    elif role == "prep":
        records = _timed(times, "finetune_lossmatch", lambda: run_grouped(
            study, which, with_drift=True, conditions=[LOSSMATCH_CONDITION]))
    else:
        ready = study.run_dir / "study_bench.ready"
        _timed(times, "wait_for_extract_and_sft", lambda: _wait(ready))
        records = _timed(times, "finetune_other", lambda: run_grouped(
            study, which, with_drift=True, exclude=[LOSSMATCH_CONDITION]))
    ks = sorted({r.get("executor", {}).get("k", 1) for r in records})
    return {"role": role, "stage_s": times, "total_s": round(time.time() - t0, 2), "runs": len(records),
            "group_sizes": ks, "device": os.environ.get("CUDA_VISIBLE_DEVICES")}


def per_run_cost(run_dir: Path) -> dict[str, Any]:
    """Per-run medians (LoRA steps / probes / drift, seconds) and the groups, from the folder's own files
    (:func:`perf.campaign_clock.clock`)."""
    from perf.campaign_clock import clock

    c = clock(run_dir)
    return {"median_per_run_s": c["median_per_run_s"], "n_runs_trained": c["n_runs_trained"],
            "n_runs_with_drift": c["n_runs_with_drift"], "groups": [{"runs": g["runs"], "k": g["k"],
                                                                     "timing_s": g["timing_s"]} for g in c["groups"]]}


def measure_anchors(config_path: str, run_dir: Path, matmul_n: int = 8192) -> dict[str, Any]:
    """perf/anchors.py on the clocked study: the matmul rate, the achieved FLOP rate of every trained group's steps
    (FLOPs of its real batches over its measured LoRA-step seconds) and PEFT against grouped steps."""
    from nnsight_inoc.stages.plan import build_plan
    from perf.anchors import matmul_rate, peft_vs_grouped, plan_step_flops

    study = _study(config_path, run_dir, "anchors")
    plan = build_plan(study, study.cfg.finetune.which)
    runs = {r.name: r for r in plan.runs}
    prec = "tf32" if study.cfg.finetune.train_autocast == "tf32" else "fp32"
    flops, seconds = 0.0, 0.0
    for g in per_run_cost(run_dir)["groups"]:
        if not all(n in runs for n in g["runs"]):
            continue
        flops += plan_step_flops(study, plan, [runs[n] for n in g["runs"]])["flops"]
        seconds += g["timing_s"]["train_steps"]
    mm = matmul_rate(study.tlm.device, prec, n=matmul_n)
    achieved = flops / seconds / 1e12 if seconds else None
    seed_runs = [r for r in next(iter(plan.by_seed().values())) if r.steer is None and r.intervene is None]
    return {"matmul": mm, "train_steps_flops": flops, "train_steps_s": seconds, "achieved_tflops": achieved,
            "achieved_over_matmul": achieved / mm["tflops"] if achieved else None,
            "peft_vs_grouped": peft_vs_grouped(study, plan, seed_runs),
            "method": "matmul FLOPs of every step's real batch (perf/anchors.py step_flops, pinned against torch's "
                      "FlopCounterMode) over the groups' LoRA-step seconds from train.json"}


def _wait(path: Path, timeout_s: float = 3600.0) -> None:
    t0 = time.time()
    while not path.is_file():
        if time.time() - t0 > timeout_s:
            raise TimeoutError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(2.0)


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--gpus", default="0", show_default=True, help="One GPU index, or two for the overlapping schedule.")
@click.option("--also", "also", type=(click.Path(dir_okay=False, exists=True), click.Path(file_okay=False,
              path_type=Path)), multiple=True, help="CONFIG RUN_DIR of a further study clocked after the first in "
              "the same process (one GPU): the decisive campaign is two traits.")
@click.option("--anchors/--no-anchors", default=False, show_default=True,
              help="Also measure the card's matmul rate, the training steps' achieved FLOP rate and the grouped "
              "step against one PEFT run (perf/anchors.py), after the studies, on the first one.")
@click.option("--matmul-n", default=8192, show_default=True,
              help="Side of the square matmul timed for the card's rate (--anchors).")
@click.option("--role", type=click.Choice(ROLES), default=None, hidden=True)
def main(config_path: str, run_dir: Path, out: Path, gpus: str, also: tuple[tuple[str, Path], ...], anchors: bool,
         matmul_n: int, role: str | None) -> None:
    if role is not None:  # a child process of the two-GPU schedule
        out.write_text(json.dumps(run_role(config_path, run_dir, role), indent=2) + "\n")
        return
    studies = [(config_path, run_dir), *also]
    for _, folder in studies:  # refused before any model loads
        done = [d for d in ("extract", "align", "finetune") if (folder / d).exists()]
        if done:
            raise click.UsageError(f"{folder} already has {done}: the clock needs a run folder with at most its data/")
    devices = [g.strip() for g in gpus.split(",") if g.strip()]
    if also and len(devices) != 1:
        raise click.UsageError("--also clocks further studies on one GPU; give --gpus with one index")
    t0 = time.time()
    result: dict[str, Any] = {"config": config_path, "gpus": devices}
    if len(devices) == 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]
        result["processes"] = [run_role(c, r, "all") for c, r in studies]
    elif len(devices) == 2:
        run_dir.mkdir(parents=True, exist_ok=True)
        procs = []
        for role, dev in (("prep", devices[0]), ("train", devices[1])):
            part = out.with_name(f"{out.stem}.{role}.json")
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": dev}
            cmd = [sys.executable, __file__, "--config", config_path, "--run-dir", str(run_dir), "--out", str(part),
                   "--role", role]
            procs.append((subprocess.Popen(cmd, env=env), part))
        codes = [p.wait() for p, _ in procs]
        if any(codes):
            raise click.ClickException(f"a study_bench process failed: exit codes {codes}")
        result["processes"] = [json.loads(part.read_text()) for _, part in procs]
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]
        from nnsight_inoc.stages.drift_summary import summarise_drift

        study = _study(config_path, run_dir, "summary")
        t1 = time.time()
        summarise_drift(study, study.cfg.finetune.which)
        result["drift_summary_s"] = round(time.time() - t1, 2)
    else:
        raise click.UsageError("--gpus takes one or two device indices")
    from nnsight_inoc.core import artifacts as A
    from nnsight_inoc.report.sections import write_report

    t1 = time.time()
    for _, folder in studies:
        write_report(folder)
    result["report_s"] = round(time.time() - t1, 2)
    result["wall_s"] = round(time.time() - t0, 2)
    result["per_run"] = {str(folder): per_run_cost(folder) for _, folder in studies}
    if anchors:
        t1 = time.time()
        result["anchors"] = measure_anchors(config_path, run_dir, matmul_n)
        result["anchors_s"] = round(time.time() - t1, 2)
    result.update(versions=A.versions(), device=A.device_info(), git=A.git_info(), date=time.strftime("%Y-%m-%d"),
                  command=" ".join(sys.argv))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"study wall time {result['wall_s']:.0f} s; {out}")


if __name__ == "__main__":
    main()
