"""Every claim of the study with its verdict: the alignment claims C1-C4, the drift claims C5-C8 and the causal
arms' claims C9-C11 (issue 22)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from nnsight_inoc.report.alignment_rules import (
    CLAIMS,
    c1_rotation,
    c2_beyond_lossmatch,
    c3_beyond_random,
    c4_regression,
    direction_cap_reason,
    direction_shortfall,
)
from nnsight_inoc.report.causal_rules import CAUSAL_CLAIMS, causal_verdicts
from nnsight_inoc.report.drift_rules import DRIFT_CLAIMS, drift_verdicts
from nnsight_inoc.report.verdicts import Verdict, cap


def all_verdicts(run_dir: Path, extract: Mapping[str, Any], align: Mapping[str, Any],
                 example: Mapping[str, Any] | None = None) -> list[tuple[str, str, Verdict]]:
    """(id, claim, verdict) for every claim; C1-C4 capped when the direction fails its checks. ``example`` is
    control C's block (``Run.example``); without it the align summary's own block is used, if any."""
    bad = direction_cap_reason(extract)
    example = example if example is not None else align.get("example_regression")
    gated = [c1_rotation(align), c2_beyond_lossmatch(align), c3_beyond_random(align), c4_regression(align, example)]
    gated = [cap(v, bad is not None, bad or "", direction_shortfall(extract)) for v in gated]
    verdicts = gated + drift_verdicts(run_dir, align) + causal_verdicts(run_dir)
    return [(cid, claim, v) for (cid, claim), v in zip(CLAIMS + DRIFT_CLAIMS + CAUSAL_CLAIMS, verdicts, strict=True)]
