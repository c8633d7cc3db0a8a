"""The kill-and-retry check of a Ray sweep (gpu/ray_check.sh ``kill``), and the one-GPU check's record.

    python gpu/ray_kill.py kill SCRATCH SWEEP_PID --after S --out kill.json
    python gpu/ray_kill.py check RUN_DIR kill.json [--which main]
    python gpu/ray_kill.py record TOP --out onegpu.json

``kill``: while the sweep (the ``finetune --executor ray`` process ``SWEEP_PID``, started with
``TMPDIR=SCRATCH``) runs, find its tasks by their scratch folders (``SCRATCH/nnsight_inoc_task_<pid>_<task>.*``,
made by ``stages.ray_exec.run_group`` when a task starts), wait until one has run ``S`` seconds, check that
the PID is a live Ray worker process, and SIGKILL it; write the PID, the task and when to ``--out``.
Exit 1 when the sweep ends (or ``--wait`` passes) before a task has run that long.

``check``: after the sweep, read the run folder's provenance (``finetune_ray_<which>``) and say whether the
killed task was retried and finished: its first attempt failed with ``WorkerCrashedError``, a later
attempt ran in another process, no task failed. Adds the verdict to the kill record; exit 1 if not.

``record``: one JSON of the one-GPU check from ``TOP/logs``: the card, the commit, every step's command,
exit status and wall time (``times.txt``), the kill record and the comparisons' verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PREFIX = "nnsight_inoc_task_"  # stages.ray_exec.SCRATCH_PREFIX (not imported: this runs beside the sweep, light)
TIMES = re.compile(r"^(\S+) (\S+) exit (\d+) after (\d+) s: (.*)$")


def running_tasks(scratch: Path) -> dict[int, str]:
    """{pid: task name} of the task scratch folders under `scratch` whose process is alive."""
    out = {}
    for d in scratch.glob(f"{PREFIX}*"):
        pid, _, rest = d.name.removeprefix(PREFIX).partition("_")
        if pid.isdigit() and "." in rest and Path(f"/proc/{pid}").exists():
            out[int(pid)] = rest.rsplit(".", 1)[0]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def kill_one(scratch: Path, sweep_pid: int, after_s: float, wait_s: float) -> dict[str, Any]:
    """SIGKILL the worker of the first task that has run `after_s` seconds; RuntimeError if none does in time."""
    seen: dict[int, float] = {}
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait_s:
        if not Path(f"/proc/{sweep_pid}").exists():
            raise RuntimeError(f"the sweep (pid {sweep_pid}) ended before a task ran {after_s:g} s")
        now = time.monotonic()
        for pid, task in running_tasks(scratch).items():
            seen.setdefault(pid, now)
            cmd = _cmdline(pid)
            if now - seen[pid] >= after_s and "ray" in cmd:  # a Ray worker ("ray::..." or default_worker.py)
                os.kill(pid, signal.SIGKILL)
                return {"killed_pid": pid, "task": task, "cmdline": cmd[:200], "signal": "SIGKILL",
                        "seconds_after_task_seen": round(now - seen[pid], 1),
                        "seconds_after_watch_start": round(now - t0, 1), "killed_at": time.time()}
        time.sleep(0.5)
    raise RuntimeError(f"no task of the sweep ran {after_s:g} s within {wait_s:g} s (scratch {scratch})")


def check(run_dir: Path, record: dict[str, Any], which: str) -> dict[str, Any]:
    """The kill record with the sweep's verdict: the killed task retried in another process and finished."""
    stage = json.loads((run_dir / "provenance.json").read_text())["stages"][f"finetune_ray_{which}"]
    task = record["task"]
    errors = stage["errors"].get(task, [])
    worker = stage["workers"].get(task, {})
    verdict = {"attempts": stage["attempts"].get(task), "max_retries": stage.get("max_retries"),
               "errors": errors, "finished_by_pid": worker.get("pid"), "failed": stage["failed"],
               "retried_after_kill": bool(errors) and errors[0].startswith("WorkerCrashedError")
               and task in stage["done"] and worker.get("pid") != record["killed_pid"] and not stage["failed"]}
    return {**record, **verdict}


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def one_gpu_record(top: Path) -> dict[str, Any]:
    """The one-GPU check's record from `top`/logs (see the module doc)."""
    logs = top / "logs"
    steps = []
    for line in (logs / "times.txt").read_text().splitlines() if (logs / "times.txt").is_file() else []:
        m = TIMES.match(line)
        if m:
            steps.append({"at": m[1], "step": m[2], "exit": int(m[3]), "wall_s": int(m[4]), "command": m[5]})
    comparisons = {}
    for f in sorted(logs.glob("compare1_*.json")):
        c = json.loads(f.read_text())
        comparisons[f.stem.removeprefix("compare1_")] = {k: c[k] for k in ("a", "b", "tol", "n_runs", "n_numbers",
                                                                           "n_differ", "max_abs_diff", "same")}
    card = _sh(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"])
    kill = logs / "kill.json"
    return {"card": card or "no NVIDIA GPU (a CPU rehearsal: Ray was told of a GPU it does not have)",
            "commit": os.environ.get("NNSIGHT_INOC_GIT_COMMIT") or _sh(["git", "rev-parse", "HEAD"]) or None,
            "host_cpus": os.cpu_count(), "steps": steps,
            "kill": json.loads(kill.read_text()) if kill.is_file() else None, "comparisons": comparisons}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kill")
    k.add_argument("scratch", type=Path)
    k.add_argument("sweep_pid", type=int)
    k.add_argument("--after", type=float, default=30.0, help="seconds a task has run before it is killed")
    k.add_argument("--wait", type=float, default=500.0, help="give up after this many seconds")
    k.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("check")
    c.add_argument("run_dir", type=Path)
    c.add_argument("record", type=Path)
    c.add_argument("--which", default="main")
    r = sub.add_parser("record")
    r.add_argument("top", type=Path)
    r.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.cmd == "kill":
        try:
            rec = kill_one(a.scratch, a.sweep_pid, a.after, a.wait)
        except RuntimeError as err:
            print(f"ray_kill: {err}", file=sys.stderr)
            return 1
        a.out.write_text(json.dumps(rec, indent=1) + "\n")
        print(f"ray_kill: SIGKILL to pid {rec['killed_pid']} (task {rec['task']}, "
              f"{rec['seconds_after_task_seen']} s after its scratch folder appeared)")
        return 0
    if a.cmd == "check":
        rec = check(a.run_dir, json.loads(a.record.read_text()), a.which)
        a.record.write_text(json.dumps(rec, indent=1) + "\n")
        print(f"ray_kill: task {rec['task']}: {rec['attempts']} attempts (max_retries {rec['max_retries']}), "
              f"finished by pid {rec['finished_by_pid']} after pid {rec['killed_pid']} was killed: "
              f"{'RETRIED' if rec['retried_after_kill'] else 'NOT RETRIED'}; errors {rec['errors']}")
        return 0 if rec["retried_after_kill"] else 1
    a.out.write_text(json.dumps(one_gpu_record(a.top), indent=1) + "\n")
    print(f"ray_kill: record written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
