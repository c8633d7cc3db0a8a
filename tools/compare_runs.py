"""Compare the finetune runs of two run folders number by number: every run's train.json and drift.json.

    python tools/compare_runs.py RUN_A RUN_B [--runs neutral_seed0,inoc_seed0] [--tol 0] [--out FILE.json]

For checking that executors give the same results (``finetune --executor ray`` against the sequential
executor or the claim workers, on the same plan). What differs between executors by design is left
out: wall-clock times (``wall_s``, ``timing_s``), peak device memory (``peak_cuda_memory_gb``), and how a run
was batched with others (train.json's ``executor``: the grouped executor's K and group; drift.json's
``measured_with`` and ``decode``: the runs and calls of one batched decode), so the grouped executor compares with the others.
Everything else must match: every number within ``--tol`` (absolute; 0 = equal as JSON floats), and
every text (answers, prompts, config), key and list length exactly. Runs are those with both files
in both folders (or ``--runs``). Exit status 0 when every compared run matches, 1 when one differs
(the first differences are printed), 2 when there is nothing to compare.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# wall clock, memory and batching: how a run was made, not what it computed
IGNORED = frozenset({"wall_s", "timing_s", "peak_cuda_memory_gb", "executor", "measured_with", "decode"})
FILES = ("train.json", "drift.json")
SHOWN = 10  # differences listed per run


def differences(a: Any, b: Any, tol: float, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, a, b) for every place where `b` differs from `a`: numbers by more than `tol`, anything else at all.

    None against None is equal (a NaN written as JSON null); bools are compared as values, not numbers.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORED:
                continue
            if k not in a or k not in b:
                yield f"{path}/{k}", a.get(k, "<missing>"), b.get(k, "<missing>")
            else:
                yield from differences(a[k], b[k], tol, f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path} (length)", len(a), len(b)
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                yield from differences(x, y, tol, f"{path}[{i}]")
    elif _number(a) and _number(b):
        if not (a == b or abs(a - b) <= tol):
            yield path, a, b
    elif a != b or type(a) is not type(b):
        yield path, a, b


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _count_numbers(x: Any) -> int:
    if isinstance(x, dict):
        return sum(_count_numbers(v) for k, v in x.items() if k not in IGNORED)
    if isinstance(x, list):
        return sum(_count_numbers(v) for v in x)
    return int(_number(x))


def _max_abs(a: Any, b: Any) -> float:
    """Largest |a - b| over the numbers at the same places (0.0 when none differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return max((_max_abs(a[k], b[k]) for k in set(a) & set(b) if k not in IGNORED), default=0.0)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return max((_max_abs(x, y) for x, y in zip(a, b)), default=0.0)
    if _number(a) and _number(b):
        d = abs(a - b)
        return d if not math.isnan(d) else math.inf
    return 0.0


def runs_in(root: Path) -> set[str]:
    """Names of the runs in a run folder that have both train.json and drift.json."""
    return {p.parent.name for p in (root / "finetune").glob("*/drift.json") if (p.parent / "train.json").is_file()}


def compare_runs(a: Path, b: Path, runs: Sequence[str] | None = None, tol: float = 0.0) -> dict[str, Any]:
    """Per run and file: numbers compared, how many differ, the largest |difference| and the first differences.

    ``runs`` default: every run finished in both folders. FileNotFoundError when a named run lacks a file.
    """
    names = sorted(runs) if runs is not None else sorted(runs_in(a) & runs_in(b))
    out: dict[str, Any] = {"a": str(a), "b": str(b), "tol": tol, "ignored": sorted(IGNORED), "runs": {}}
    for name in names:
        per: dict[str, Any] = {}
        for fname in FILES:
            ja, jb = (json.loads((root / "finetune" / name / fname).read_text()) for root in (a, b))
            diffs = list(differences(ja, jb, tol))
            per[fname] = {"numbers": _count_numbers(ja), "differ": len(diffs), "max_abs_diff": _max_abs(ja, jb),
                          "first": [[p, x, y] for p, x, y in diffs[:SHOWN]]}
        out["runs"][name] = per
    out["n_runs"] = len(names)
    out["n_numbers"] = sum(f["numbers"] for r in out["runs"].values() for f in r.values())
    out["n_differ"] = sum(f["differ"] for r in out["runs"].values() for f in r.values())
    out["max_abs_diff"] = max((f["max_abs_diff"] for r in out["runs"].values() for f in r.values()), default=0.0)
    out["same"] = out["n_runs"] > 0 and out["n_differ"] == 0
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--runs", help="comma-separated run names (default: every run finished in both)")
    ap.add_argument("--tol", type=float, default=0.0, help="absolute tolerance per number (default 0: equal)")
    ap.add_argument("--out", type=Path, help="also write the comparison as JSON here")
    args = ap.parse_args(argv)
    res = compare_runs(args.a, args.b, args.runs.split(",") if args.runs else None, args.tol)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    for name, per in res["runs"].items():
        line = ", ".join(f"{f}: {v['differ']} of {v['numbers']} numbers differ (max |diff| {v['max_abs_diff']:.3g})"
                         for f, v in per.items())
        print(f"{name}: {line}")
        for f, v in per.items():
            for p, x, y in v["first"]:
                print(f"    {f}{p}: {str(x)[:80]} | {str(y)[:80]}")
    if res["n_runs"] == 0:
        print(f"no run has train.json and drift.json in both {args.a} and {args.b}", file=sys.stderr)
        return 2
    print(f"{'SAME' if res['same'] else 'DIFFERENT'}: {res['n_runs']} runs, {res['n_numbers']} numbers, "
          f"{res['n_differ']} differences over tol {args.tol:g}, max |diff| {res['max_abs_diff']:.3g}")
    return 0 if res["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
