"""Per-seed pairing of finetune runs: the one definition of "condition a minus condition b, seed by seed".

Runs of one seed share their batches, step order and LoRA initialisation; only the training
prompt differs. Differences are therefore taken within a seed, which cancels the seed-to-seed
noise, and a seed missing on either side is left out (never imputed).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nnsight_inoc.stats.intervals import mean_ci


def by_seed(rows: Sequence[Mapping[str, Any]], cond: str, key: str) -> dict[int, float]:
    """seed -> value of one per-run quantity for one condition (runs lacking the value are absent)."""
    return {int(r["seed"]): float(r[key]) for r in rows if r["condition"] == cond and r.get(key) is not None}


def paired_diffs(rows: Sequence[Mapping[str, Any]], a: str, b: str, key: str) -> tuple[list[int], list[float]]:
    """(seeds, a - b per seed) over the seeds both conditions have, in seed order."""
    xa, xb = by_seed(rows, a, key), by_seed(rows, b, key)
    seeds = sorted(set(xa) & set(xb))
    return seeds, [xa[s] - xb[s] for s in seeds]


def paired_mean_ci(rows: Sequence[Mapping[str, Any]], a: str, b: str, key: str) -> tuple[float, float, float, int]:
    """Mean [t-interval] over seeds of a - b for one per-run quantity (see :func:`.intervals.mean_ci`)."""
    return mean_ci(paired_diffs(rows, a, b, key)[1])
