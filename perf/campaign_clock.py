"""The clock of a finished (or partly finished) campaign run folder, read from its files: prep stages and per-run cost.

    python perf/campaign_clock.py results/decisive_allcaps --card "NVIDIA H100 80GB HBM3" --out clock.json

Issue 24 asks for per-run cost as LoRA steps / probes / drift. Every number here comes from the folder:
the stages' seconds in ``provenance.json``; per group of runs trained together (``train.json`` ``executor``), the
group's ``timing_s`` (LoRA steps, probes, setup and save); per run, drift's ``wall_s`` (a group's batched decode
divided by its runs). Medians are over runs. The card is the caller's word (the files do not record it).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import click


def clock(run_dir: Path) -> dict[str, Any]:
    """Prep stage seconds, each training group's timing, and per-run medians (seconds), from ``run_dir``'s files."""
    prov = json.loads((run_dir / "provenance.json").read_text())
    prep = {k: v["seconds"] for k, v in prov.get("stages", {}).items() if "seconds" in v}
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    per_run: dict[str, dict[str, float]] = {}
    for tj in sorted(run_dir.glob("finetune/*/train.json")):
        rec = json.loads(tj.read_text())
        ex = rec.get("executor") or {"k": 1, "runs": [tj.parent.name]}
        k = int(ex["k"])
        groups.setdefault(tuple(ex["runs"]), {"k": k, "timing_s": rec["timing_s"],
                                             "peak_cuda_memory_gb": rec.get("peak_cuda_memory_gb")})
        dj = tj.parent / "drift.json"
        per_run[tj.parent.name] = {
            "train_steps_s": rec["timing_s"]["train_steps"] / k, "probes_s": rec["timing_s"]["probes"] / k,
            "drift_s": json.loads(dj.read_text())["wall_s"] if dj.is_file() else float("nan")}
    med = {key: statistics.median(v[key] for v in per_run.values() if v[key] == v[key]) if any(
        v[key] == v[key] for v in per_run.values()) else None for key in ("train_steps_s", "probes_s", "drift_s")}
    return {"run_dir": str(run_dir), "prep_stage_seconds": prep, "prep_total_s": sum(prep.values()),
            "groups": [{"runs": list(r), **g} for r, g in groups.items()], "per_run": per_run,
            "median_per_run_s": med, "n_runs_trained": len(per_run),
            "n_runs_with_drift": sum(v["drift_s"] == v["drift_s"] for v in per_run.values()),
            "method": "stage seconds from provenance.json; group timing from train.json timing_s (divided by the "
                      "group's k per run); drift wall_s from drift.json (a group's decode divided by its runs)"}


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--card", required=True, help="The GPU the folder's runs ran on (the files do not say).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(run_dir: Path, card: str, out: Path) -> None:
    """Write the clock of RUN_DIR as JSON and print its medians."""
    res = {"card": card, **clock(run_dir)}
    out.write_text(json.dumps(res, indent=1))
    click.echo(f"prep {res['prep_total_s']:.0f} s; per run (median): " + ", ".join(
        f"{k} {v:.1f}" for k, v in res["median_per_run_s"].items() if v is not None) + f"; wrote {out}")


if __name__ == "__main__":
    main()
