"""Drift contrasts at the unit of replication: the trained model (one seed of one condition).

Issue 22, item 4 (a referee's finding): a crossed bootstrap over seeds x panel test prompts treats the
test prompts applied to the same few trained models as if they were replicates, and its interval is too
narrow for a claim about training. Here the panel prompts are test *conditions*: each run is first
reduced to one number, its main drift (the mean over the panel's test prompts when the runs have a
panel, else the neutral test prompt's drift), and only then are runs compared, seed by seed.

A contrast a - b: per-seed differences over the seeds both conditions have (same seed = same batches,
step order and LoRA initialisation, so the difference cancels seed-to-seed noise); the estimate is their
mean, the interval a Student t-interval over seeds (:func:`~nnsight_inoc.stats.intervals.mean_ci`), and
the exact sign-flip p (:func:`~nnsight_inoc.stats.pairing.sign_flip_p`) is reported beside it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from nnsight_inoc.stats.intervals import CI_LEVEL, mean_ci
from nnsight_inoc.stats.pairing import MAX_SIGN_FLIP_N, min_sign_flip_p, sign_flip_p

PANEL_MEASURE = "drift_panel_score"  # per run: mean drift over the panel's test prompts
PANEL_BY_PROMPT = "drift_panel_by_prompt"  # per run: test prompt -> drift under it
NEUTRAL_MEASURE = "drift_score"  # per run: drift under the neutral test prompt
METHOD = (f"per-seed differences of each run's main drift (panel test prompts averaged within the run first); "
          f"mean over seeds with a {CI_LEVEL:.0%} Student t-interval over seeds; exact sign-flip p beside it")


def run_drift(row: Mapping[str, Any], measure: str) -> float | None:
    """One run's drift under ``measure``. For the panel measure: ``drift_panel_score`` when the row has it, else
    the mean of ``drift_panel_by_prompt`` (the test prompts averaged within the run); None when absent."""
    if measure == PANEL_MEASURE and row.get(PANEL_MEASURE) is None:
        by = row.get(PANEL_BY_PROMPT)
        return None if not by else sum(float(v) for v in by.values()) / len(by)
    v = row.get(measure)
    return None if v is None else float(v)


def drift_measure(rows: Sequence[Mapping[str, Any]], conditions: Sequence[str] | None = None) -> str:
    """The panel measure when every run (of ``conditions``, default all) has panel drift, else the neutral
    test prompt's. A contrast never mixes the two."""
    use = [r for r in rows if conditions is None or r["condition"] in conditions]
    has = bool(use) and all(run_drift(r, PANEL_MEASURE) is not None for r in use)
    return PANEL_MEASURE if has else NEUTRAL_MEASURE


def _by_seed(rows: Sequence[Mapping[str, Any]], cond: str, measure: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for r in rows:
        if r["condition"] != cond:
            continue
        v = run_drift(r, measure)
        if v is not None:
            if int(r["seed"]) in out:
                raise ValueError(f"two {cond} runs of seed {r['seed']}: a seed is one trained model per condition")
            out[int(r["seed"])] = v
    return out


def seed_contrast(rows: Sequence[Mapping[str, Any]], a: str, b: str, measure: str | None = None,
                  level: float = CI_LEVEL) -> dict[str, Any]:
    """Drift contrast a - b at the unit of replication (the seed).

    ``rows``: finetune summary rows (one per run: ``condition``, ``seed`` and the drift keys). ``measure``:
    the per-run drift to compare (default :func:`drift_measure` over a and b). Returns a JSON-ready block:
    ``a``, ``b``, ``measure``, ``seeds`` (paired seeds, sorted), ``per_seed`` (a - b per paired seed, same
    order), ``a_seeds`` / ``b_seeds`` (the seeds each side has), ``n_seeds``, ``estimate`` (mean of
    ``per_seed``), ``lo`` / ``hi`` (t-interval at ``level``; None with fewer than 2 seeds), ``level``,
    ``sign_flip_p`` and ``min_sign_flip_p`` (None with no seed), ``method``. No verdict: the rules that read
    it are in ``report.contrast_rules``.
    """
    measure = measure or drift_measure(rows, (a, b))
    xa, xb = _by_seed(rows, a, measure), _by_seed(rows, b, measure)
    seeds = sorted(set(xa) & set(xb))
    diffs = [xa[s] - xb[s] for s in seeds]
    m, lo, hi, n = mean_ci(diffs, level)
    flip = sign_flip_p(diffs) if 0 < n <= MAX_SIGN_FLIP_N and all(math.isfinite(d) for d in diffs) else None

    def num(x: float) -> float | None:
        return None if x != x else float(x)

    return {"a": a, "b": b, "measure": measure, "seeds": seeds, "per_seed": diffs, "a_seeds": sorted(xa),
            "b_seeds": sorted(xb), "n_seeds": n, "estimate": num(m), "lo": num(lo), "hi": num(hi), "level": level,
            "sign_flip_p": flip, "min_sign_flip_p": min_sign_flip_p(n) if n else None, "method": METHOD}
