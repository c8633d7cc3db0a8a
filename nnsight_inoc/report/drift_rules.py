"""Verdicts about drift (C5-C8) and the one-line answer to the study's question.

Kept apart from :mod:`.alignment_rules` (the alignment claims C1-C4) because these read the
finetune stage's summary, not the align stage's. Same contract: every rule returns
``(verdict, reason)`` with the numbers that decided it, from thresholds defined here.

The answer to "does inoculation reduce drift *by rotating gradients away from v*?" needs
three things at once: drift is reduced (C5), the gradients are rotated (C1), and across
training prompts drift follows alignment beyond what the prompt's loss reduction explains
(C7). A drift reduction alone says nothing about the mechanism.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from nnsight_inoc.core.layout import FINETUNE_DIR, SUMMARY_JSON
from nnsight_inoc.report.load import drift_summary
from nnsight_inoc.report.verdicts import (
    INCONCLUSIVE,
    MAX_LOSS_GAP_SHARE,
    NOT_SUPPORTED,
    SUPPORTED,
    Verdict,
    loss_gap_share,
)
from nnsight_inoc.stats.pairing import paired_diffs
from nnsight_inoc.stats.relation import MAX_COLLINEARITY, MIN_GROUPS

MIN_SEEDS = 3
NEGLIGIBLE_R = 0.1  # |r| below this with a CI spanning 0 = "not supported" rather than "inconclusive"
DRIFT_SUMMARY = f"{FINETUNE_DIR}/{SUMMARY_JSON}"  # as the verdicts name it


def _not_run(run_dir: Path) -> Verdict:
    return INCONCLUSIVE, f"not run: no {DRIFT_SUMMARY} in {run_dir.name}/"


def _paired(rows: Sequence[Mapping[str, Any]], a: str, b: str) -> tuple[list[int], list[float], str]:
    seeds, diffs = paired_diffs(rows, a, b, "drift_score")
    desc = (f"{a} - {b} drift in trait score per seed {seeds}: " + ", ".join(f"{d:+.3f}" for d in diffs)
            + (f" (mean {sum(diffs) / len(diffs):+.3f})" if diffs else ""))
    return seeds, diffs, desc


def _lower_every_seed(rows: Sequence[Mapping[str, Any]], a: str, b: str) -> Verdict:
    seeds, diffs, desc = _paired(rows, a, b)
    if any(d != d for d in diffs):
        return INCONCLUSIVE, f"drift not computable for some seed; {desc}"
    if len(seeds) < MIN_SEEDS:
        return INCONCLUSIVE, f"fewer than {MIN_SEEDS} paired seeds; {desc}"
    if all(d < 0 for d in diffs):
        return SUPPORTED, desc
    if all(d >= 0 for d in diffs):
        return NOT_SUPPORTED, desc
    return INCONCLUSIVE, f"seeds disagree; {desc}"


def c5_drift(run_dir: Path) -> Verdict:
    """C5: inoculation reduces drift: inoc's drift below neutral's for every one of >= 3 paired seeds."""
    summ = drift_summary(run_dir)
    return _not_run(run_dir) if summ is None else _lower_every_seed(summ["rows"], "inoc", "neutral")


def c8_drift_beyond_lossmatch(run_dir: Path, align: Mapping[str, Any]) -> Verdict:
    """C8: inoculation's drift is below the loss-matched prompt's for every seed.

    At most inconclusive when the loss match is incomplete (the same limit as C2): a prompt that
    lowers the loss less could drift more for that reason alone.
    """
    summ = drift_summary(run_dir)
    if summ is None:
        return _not_run(run_dir)
    if not any(r["condition"] == "lossmatch" for r in summ["rows"]):
        return INCONCLUSIVE, "no loss-matched runs in the drift summary"
    v, why = _lower_every_seed(summ["rows"], "inoc", "lossmatch")
    share = loss_gap_share(align)
    if v == SUPPORTED and share > MAX_LOSS_GAP_SHARE:
        return INCONCLUSIVE, (f"loss match incomplete (the loss-matched prompt leaves {share:.0%} of the inoc - neutral "
                              f"loss gap, limit {MAX_LOSS_GAP_SHARE:.0%}); {why}")
    return v, why


def _relation(summ: Mapping[str, Any], key: str) -> tuple[Mapping[str, Any] | None, str]:
    rel = summ.get("relation", {}).get(key)
    if rel is None:
        return None, f"no clustered relation '{key}' in the summary (`cli.py drift --summary-only` writes it)"
    if "error" in rel:
        return None, f"{key}: {rel['error']}"
    return rel, (f"r {rel['r']:+.2f} [{rel['lo']:+.2f}, {rel['hi']:+.2f}] over {rel['n_runs']} runs of "
                 f"{rel['n_groups']} conditions (bootstrap over conditions)")


def _r_verdict(rel: Mapping[str, Any] | None, desc: str) -> Verdict:
    if rel is None:
        return INCONCLUSIVE, desc
    if rel["n_groups"] < MIN_GROUPS:
        return INCONCLUSIVE, f"fewer than {MIN_GROUPS} training prompts to correlate over; {desc}"
    if rel["lo"] > 0:
        return SUPPORTED, desc
    if rel["hi"] < 0 or abs(rel["r"]) < NEGLIGIBLE_R:
        return NOT_SUPPORTED, desc
    return INCONCLUSIVE, desc


def _relation_claim(run_dir: Path, key: str, label: str = "") -> tuple[Verdict, Mapping[str, Any] | None]:
    summ = drift_summary(run_dir)
    if summ is None:
        return _not_run(run_dir), None
    rel, desc = _relation(summ, key)
    return _r_verdict(rel, label + desc), summ


def c6_drift_tracks_alignment(run_dir: Path) -> Verdict:
    """C6: across training prompts, alignment before training predicts drift (r > 0, CI over conditions).

    Also says which predictor has the larger |r|: alignment or the prompt's loss reduction.
    """
    (v, why), summ = _relation_claim(run_dir, "align_pre~drift_score")
    if summ is not None:
        rel, _ = _relation(summ, "align_pre~drift_score")
        loss, ldesc = _relation(summ, "loss_reduction~drift_score")
        if rel is not None and loss is not None:
            better = "alignment" if abs(rel["r"]) > abs(loss["r"]) else "loss reduction"
            why += f"; loss reduction vs drift: {ldesc}; the larger |r|: {better}"
    return v, why


def c7_alignment_beyond_loss(run_dir: Path) -> Verdict:
    """C7: alignment predicts drift beyond the prompt's loss reduction (partial r > 0, CI over conditions).

    At most inconclusive when alignment and loss reduction are nearly collinear across the runs
    (|r| > MAX_COLLINEARITY): then no partial correlation can say which of the two carries the relation.
    """
    (v, why), summ = _relation_claim(run_dir, "align_pre~drift_score|loss_reduction", "partial ")
    col = (summ or {}).get("relation", {}).get("align_pre~loss_reduction", {})
    if "r" in col:
        why += f"; alignment vs loss reduction r {col['r']:+.3f}"
        if v != INCONCLUSIVE and abs(col["r"]) > MAX_COLLINEARITY:
            return INCONCLUSIVE, f"nearly collinear predictors (|r| > {MAX_COLLINEARITY}); {why}"
    return v, why


DRIFT_CLAIMS = (
    ("C5", "Inoculation reduces drift"),
    ("C6", "Drift tracks alignment"),
    ("C7", "... beyond the training prompt's loss reduction"),
    ("C8", "Inoculation reduces drift beyond the loss-matched control"),
)


def drift_verdicts(run_dir: Path, align: Mapping[str, Any]) -> list[Verdict]:
    return [c5_drift(run_dir), c6_drift_tracks_alignment(run_dir), c7_alignment_beyond_loss(run_dir),
            c8_drift_beyond_lossmatch(run_dir, align)]


def answer(verdicts: Mapping[str, str]) -> Verdict:
    """The study's question from the claims: drift reduced (C5), gradients rotated (C1), drift following
    alignment beyond loss (C7). Returns (label, sentence)."""
    c1, c5, c7 = verdicts["C1"], verdicts["C5"], verdicts["C7"]
    if c5 == NOT_SUPPORTED:
        return NOT_SUPPORTED, "Inoculation did not reduce drift here, so there is no drift reduction to explain."
    if c5 == INCONCLUSIVE:
        return INCONCLUSIVE, "Whether inoculation reduced drift is itself undecided (C5), so the mechanism is too."
    if c1 == SUPPORTED and c7 == SUPPORTED:
        return SUPPORTED, ("Inoculation reduced drift, its gradients were rotated away from v, and across training "
                           "prompts drift followed alignment beyond the loss reduction: consistent with the hypothesis.")
    reasons = []
    if c1 != SUPPORTED:
        reasons.append(f"the rotation itself is {c1} (C1)")
    if c7 != SUPPORTED:
        reasons.append(f"alignment predicting drift beyond loss reduction is {c7} (C7)")
    label = NOT_SUPPORTED if NOT_SUPPORTED in (c1, c7) else INCONCLUSIVE
    return label, ("Inoculation reduced drift (C5), but the data do not attribute that to rotated gradients: "
                   + "; ".join(reasons) + ".")
