"""Monitoring within system prompts: does the projection track the trait *inside* one prompt?

The monitoring check (issue 3) correlates the final-prompt projection on v with the answer's trait
score over the answers to several monitoring system prompts. That pooled r mostly compares the
prompts (a prompt that asks for the trait raises both), so issue 16 asks for the within-prompt r
beside it: each prompt's mean removed from both sides, with a CI from a bootstrap over prompts
(:func:`~nnsight_inoc.stats.correlation.within_group_corr`). The issue-3 threshold applies to the
pooled r (it gates the verdicts); it is reported for both.

The extract stage writes this block into its summary; for published runs whose summary lacks it,
:func:`monitoring_within` computes it from ``extract/monitoring.csv`` (one row per answer:
system_index, trait_score, proj_l<layer>), with the run's own bootstrap settings.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.report.alignment_rules import R_MIN
from nnsight_inoc.stats.bootstrap import RngLike
from nnsight_inoc.stats.correlation import within_group_corr, within_group_r_by_col


def within_prompt_summary(proj: np.ndarray, scores: np.ndarray, prompt_index: Sequence[int], layer: int,
                          n_boot: int, rng: RngLike) -> dict[str, Any]:
    """Within-prompt r of projection (n, L) and trait score (n,) at every layer, with a CI over prompts at
    ``layer``. Keys: by_layer (L,) (None where undefined), chosen ({r, lo, hi, n, n_groups, r_by_group,
    ...} or {error}), threshold, passes (r >= threshold; None when undefined), note."""
    try:
        by_layer = within_group_r_by_col(proj, scores, prompt_index)
    except ValueError:  # e.g. one monitoring prompt only: the chosen layer's entry below says why
        by_layer = np.full(proj.shape[1], np.nan)
    try:
        chosen: dict[str, Any] = within_group_corr(proj[:, layer], scores, prompt_index, n_boot=n_boot, rng=rng)
        passes: bool | None = bool(chosen["r"] >= R_MIN)
    except ValueError as err:
        chosen, passes = {"error": str(err)}, None
    return {"by_layer": [float(v) if np.isfinite(v) else None for v in by_layer], "layer": int(layer),
            "chosen": chosen, "threshold": R_MIN, "passes": passes,
            "note": "each system prompt's mean removed from projection and score; CI: bootstrap over prompts; "
                    "the threshold gates the verdicts through the pooled r only"}


def read_monitoring_table(layout: RunLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(proj (n, L), trait score (n,) with NaN for unscored answers, system prompt index (n,)) from
    ``extract/monitoring.csv``; FileNotFoundError naming the file when it is absent."""
    path = layout.monitor_table
    if not path.is_file():
        raise FileNotFoundError(f"missing artifact {path}; run `extract` first")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} has no rows")
    cols = sorted((c for c in rows[0] if c.startswith("proj_l")), key=lambda c: int(c[len("proj_l"):]))
    proj = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float64)
    scores = np.array([float(r["trait_score"]) if r["trait_score"] not in ("", "None") else math.nan for r in rows])
    return proj, scores, np.array([int(r["system_index"]) for r in rows])


def monitoring_within(run_dir: Any, extract: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The within-prompt block of the extract summary, or (older runs) computed from monitoring.csv at the
    chosen layer with the run's ``align.n_bootstrap`` and ``seed``; marked ``"source"`` either way."""
    block = extract.get("monitoring", {}).get("within_prompt")
    if block is not None:
        return {**block, "source": "extract summary"}
    proj, scores, idx = read_monitoring_table(RunLayout(run_dir))
    n_boot = int(config.get("align", {}).get("n_bootstrap", 2000))
    out = within_prompt_summary(proj, scores, idx, int(extract["chosen"]["layer"]), n_boot, int(config.get("seed", 0)))
    return {**out, "source": "computed by the report from extract/monitoring.csv (the summary predates it)"}
