"""Intervals over a handful of values (seeds), where a bootstrap has too few distinct resamples.

With 3 seeds a percentile bootstrap of the mean can take only 10 distinct values, so the
per-seed comparisons of finetune runs use a Student t-interval of the mean instead; the
report says so wherever it prints one. Drift measured under a panel of test prompts is a
seeds x prompts table: :func:`panel_intervals` gives its mean a CI over both factors at once.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from nnsight_inoc.stats.bootstrap import RngLike, crossed_bootstrap_mean

CI_LEVEL = 0.95


def mean_ci(x: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n): the mean and its two-sided t-interval at ``level``.

    NaN bounds with fewer than 2 values (no spread to estimate); all NaN and n = 0 when empty.
    """
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = sum(x) / n
    if n < 2:
        return m, math.nan, math.nan, n
    sd = math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return m, m - half, m + half, n


PANEL_METHOD = ("crossed bootstrap over seeds and panel test prompts (rows and columns of the seed x prompt table "
                "resampled independently; Owen 2007)")


def _table(rows: Sequence[Mapping[str, Any]], cond: str, key: str) -> tuple[dict[int, Mapping[str, float]], list[str]]:
    by_seed = {int(r["seed"]): r[key] for r in rows if r["condition"] == cond and r.get(key) is not None}
    prompts = sorted({p for v in by_seed.values() for p in v})
    return by_seed, prompts


def panel_intervals(
    rows: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]], key: str = "drift_panel_by_prompt",
    n_boot: int = 2000, rng: RngLike = 0,
) -> dict[str, Any]:
    """Mean drift over panel test prompts and seeds per condition, and paired contrasts, with CIs over both.

    ``rows[i][key]`` maps each panel test prompt to that run's drift under it. Per condition the
    (seeds x prompts) table's mean gets a :func:`~nnsight_inoc.stats.bootstrap.crossed_bootstrap_mean`
    interval; a contrast a - b is taken cell by cell (same seed: same batches and LoRA init; same test
    prompt) over the seeds both have. Every run must carry the same prompts (ValueError naming the
    run otherwise): a prompt missing from one run would silently change what the mean is over.
    Returns {"prompts", "method", "by_condition": {c: {...}}, "contrasts": {"a-b": {...} or {error}}}.
    """
    conds = list(dict.fromkeys(r["condition"] for r in rows if r.get(key) is not None))
    if not conds:
        raise ValueError(f"no run carries {key!r}")
    prompts = _table(rows, conds[0], key)[1]
    for r in rows:
        if r.get(key) is not None and sorted(r[key]) != prompts:
            raise ValueError(f"run {r['condition']} seed {r['seed']} has panel prompts {sorted(r[key])}, "
                             f"others {prompts}: every run must be measured under the same panel")
    out: dict[str, Any] = {"prompts": prompts, "method": PANEL_METHOD, "by_condition": {}, "contrasts": {}}
    for c in conds:
        tab, _ = _table(rows, c, key)
        x = np.array([[tab[s][p] for p in prompts] for s in sorted(tab)], dtype=np.float64)
        out["by_condition"][c] = crossed_bootstrap_mean(x, n_boot=n_boot, rng=rng) | {"seeds": sorted(tab)}
    for a, b in pairs:
        ta, tb = _table(rows, a, key)[0], _table(rows, b, key)[0]
        seeds = sorted(set(ta) & set(tb))
        if not seeds:
            out["contrasts"][f"{a}-{b}"] = {"error": f"no seed has both {a} and {b} panel drift"}
            continue
        d = np.array([[ta[s][p] - tb[s][p] for p in prompts] for s in seeds], dtype=np.float64)
        out["contrasts"][f"{a}-{b}"] = crossed_bootstrap_mean(d, n_boot=n_boot, rng=rng) | {"seeds": seeds}
    return out
