"""The study's own clock: the whole study on one GPU (or two), each stage timed.

Issue 17's target is the ALL-CAPS study (load, extract, SFT completions, align with controls,
48 LoRA runs with probes, drift, report) in 10 minutes on one H200. This runs exactly those
stages with the configured executor (``[execution]``; ``grouped`` trains the runs of a seed
together) into a fresh run folder and writes the wall time of each stage, the group size used
and the card, commit and versions to ``--out``.

With two GPUs (``--gpus 0,1``) stages that do not depend on each other overlap: one process
(GPU 0) runs extract, the SFT completions and align, then trains the loss-matched runs, whose
prompt align chooses; the other (GPU 1) starts training every other run as soon as the
direction and the SFT completions exist. The drift summary and the report follow.

    PYTHONPATH=. python perf/study_bench.py --config gpu/allcaps_gpu.toml --run-dir RUN --out OUT.json [--gpus 0,1]
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
@click.option("--role", type=click.Choice(ROLES), default=None, hidden=True)
def main(config_path: str, run_dir: Path, out: Path, gpus: str, role: str | None) -> None:
    if role is not None:  # a child process of the two-GPU schedule
        out.write_text(json.dumps(run_role(config_path, run_dir, role), indent=2) + "\n")
        return
    done = [d for d in ("extract", "align", "finetune") if (run_dir / d).exists()]
    if done:
        raise click.UsageError(f"{run_dir} already has {done}: the clock needs a run folder with at most its data/")
    devices = [g.strip() for g in gpus.split(",") if g.strip()]
    t0 = time.time()
    result: dict[str, Any] = {"config": config_path, "gpus": devices}
    if len(devices) == 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]
        result["processes"] = [run_role(config_path, run_dir, "all")]
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
    write_report(run_dir)
    result["report_s"] = round(time.time() - t1, 2)
    result["wall_s"] = round(time.time() - t0, 2)
    result.update(versions=A.versions(), device=A.device_info(), git=A.git_info(), date=time.strftime("%Y-%m-%d"),
                  command=" ".join(sys.argv))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"study wall time {result['wall_s']:.0f} s; {out}")


if __name__ == "__main__":
    main()
