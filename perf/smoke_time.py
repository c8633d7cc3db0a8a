"""How long the CPU smoke run takes end to end: a benchmark, not a test (a test must not fail on slowness alone).

    PYTHONPATH=. python perf/smoke_time.py [--out artifacts/bench/smoke_time.json] [--run-dir DIR]

Runs ``python cli.py run --preset smoke`` (the path ``tests/test_smoke_e2e.py`` checks for
correctness, without a time limit) in a fresh run folder: a temporary one, removed afterwards,
unless ``--run-dir`` names one. Writes the wall time, the exit code, each stage's seconds from the
run's provenance, and the machine's state (CPU count, load average before and after: the smoke
run took 6 to 7 minutes on 2 idle cores, and over 25 on a loaded machine) with the commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.layout import BENCH_DIR, RunLayout

ROOT = Path(__file__).resolve().parent.parent


def time_command(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``argv`` to the end (no time limit) and say how long it took and how it ended."""
    load0 = os.getloadavg()
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    return {"argv": argv, "exit_code": proc.returncode, "wall_s": round(time.monotonic() - t0, 2),
            "load_avg_before": [round(x, 2) for x in load0], "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds per stage as the run's provenance recorded them ({} when it has none)."""
    path = RunLayout(run_dir).provenance
    if not path.is_file():
        return {}
    return {k: v["seconds"] for k, v in json.loads(path.read_text()).get("stages", {}).items()}


def record(run_dir: Path, argv: list[str] | None = None) -> dict[str, Any]:
    """Time the smoke run (or ``argv``) into ``run_dir``; the record written by :func:`main`."""
    argv = argv or [sys.executable, "cli.py", "run", "--preset", "smoke", "--run-dir", str(run_dir)]
    env = {**os.environ, "NNSIGHT_INOC_QUIET": "1"}
    out = time_command(argv, ROOT, env)
    out.update(stages=stage_seconds(run_dir), cpu_count=os.cpu_count(), git=A.git_info(),
               date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return out


@click.command()
@click.option("--out", type=click.Path(dir_okay=False), default=str(BENCH_DIR / "smoke_time.json"), show_default=True)
@click.option("--run-dir", type=click.Path(file_okay=False), help="Keep the run here (default: a temporary folder).")
def main(out: str, run_dir: str | None) -> None:
    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="smoke-time-") as tmp:
            result = record(Path(tmp) / "run")
    else:
        result = record(Path(run_dir))
    A.write_json(Path(out), result)
    click.echo(f"smoke run: exit {result['exit_code']}, {result['wall_s']:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
