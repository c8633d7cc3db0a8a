"""Verdicts about drift: C5 and C8 (paired contrasts) and C6, C7 (correlational description).

Kept apart from :mod:`.alignment_rules` (the alignment claims C1-C4) because these read the
finetune stage's summary, not the align stage's. Same contract: every rule returns a
:class:`~.verdicts.Verdict` with the numbers that decided it, from thresholds defined here or in
:mod:`.contrast_rules`; the causal arms' claims C9-C11 are in :mod:`.causal_rules`, the answer to the
study's question in :mod:`.answer`.

Rules pre-registered in issue 22, before any sweep (replacing issue 16's):

* Drift comparisons (C5, C8) are decided at the unit of replication, the trained model: each run's main
  drift (the panel mean when the runs have a panel, else the neutral test prompt's) is paired by seed,
  with a t-interval over seeds (:func:`.contrast_rules.contrast_verdict`; at least 3 paired seeds). Panel
  test prompts are test conditions, never replicates: the crossed bootstrap over prompts and seeds stays
  in the summary as description and decides nothing. Supported only when the interval excludes 0 AND the
  estimate lies beyond the +-0.05 negligible band; decided against when the whole interval lies inside
  the band or beyond 0 the other way.
* C6 and C7 are correlational description across training prompts (alignment vs drift), outside the
  answer: C7 is capped by the collinearity of alignment with the loss reduction whatever the data. C7
  controls for both parts of the loss reduction (trait and content) when they were measured.
* A capped verdict says what it was before the cap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from nnsight_inoc.core.layout import FINETUNE_DIR, SUMMARY_JSON
from nnsight_inoc.report.contrast_rules import LESS, seed_verdict
from nnsight_inoc.report.intervals_fmt import CORR_RANGE, fmt_ci
from nnsight_inoc.report.load import drift_summary
from nnsight_inoc.report.verdicts import (
    INCONCLUSIVE,
    MAX_LOSS_GAP_SHARE,
    NOT_SUPPORTED,
    SUPPORTED,
    Verdict,
    cap,
    control_of,
    loss_gap_share,
    loss_gap_words,
    loss_match_shortfall,
)
from nnsight_inoc.stats.relation import MAX_COLLINEARITY, MIN_GROUPS

NEGLIGIBLE_R = 0.1  # |r| below this with a CI spanning 0 = "not supported" rather than "inconclusive"
DRIFT_SUMMARY = f"{FINETUNE_DIR}/{SUMMARY_JSON}"  # as the verdicts name it


def _not_run(run_dir: Path) -> Verdict:
    return Verdict(INCONCLUSIVE, f"not run: no {DRIFT_SUMMARY} in {run_dir.name}/", ("drift not measured",))


def main_drift(summ: Mapping[str, Any]) -> str:
    """The drift the verdicts use: the summary's ``main_drift`` (panel mean when measured), else the neutral
    test prompt's ``drift_score`` (summaries before issue 16)."""
    return summ.get("main_drift") or summ.get("relation", {}).get("main_target") or "drift_score"


def paired_drift(summ: Mapping[str, Any], a: str, b: str) -> Verdict:
    """a's drift below b's at the unit of replication: each run's main drift (:func:`main_drift`), paired by
    seed, t-interval over at least MIN_SEEDS seeds, estimate beyond +-NEGLIGIBLE_DRIFT
    (:func:`.contrast_rules.contrast_verdict`)."""
    return seed_verdict(summ["rows"], a, b, main_drift(summ), LESS)[0]


def c5_drift(run_dir: Path) -> Verdict:
    """C5: inoculation reduces drift: inoc - neutral < 0 (pre-registered in issue 22, before any sweep): the
    t-interval over >= 3 paired seeds below 0 and the estimate below -NEGLIGIBLE_DRIFT (0.05 trait score)."""
    summ = drift_summary(run_dir)
    return _not_run(run_dir) if summ is None else paired_drift(summ, "inoc", "neutral")


def c8_drift_beyond_lossmatch(run_dir: Path, align: Mapping[str, Any]) -> Verdict:
    """C8: inoculation's drift is below the loss-matched control's (the content leak when measured, else the
    pool prompt): inoc - control < 0 by the rule of C5 (pre-registered in issue 22, before any sweep).

    At most inconclusive when the loss match is incomplete (the same limit as C2): a prompt that
    lowers the loss less could drift more for that reason alone.
    """
    summ = drift_summary(run_dir)
    if summ is None:
        return _not_run(run_dir)
    control = control_of(align)
    if not any(r["condition"] == control for r in summ["rows"]):
        return Verdict(INCONCLUSIVE, f"no {control} runs in the drift summary", (f"no {control} runs",))
    share = loss_gap_share(align, control)
    why = (f"loss match incomplete (the {control} control leaves {loss_gap_words(align, control)} of the inoc - "
           f"neutral loss gap, "
           f"limit {MAX_LOSS_GAP_SHARE:.0%})")
    return cap(paired_drift(summ, "inoc", control), share > MAX_LOSS_GAP_SHARE, why,
               loss_match_shortfall(share, control))


def _relation(summ: Mapping[str, Any], key: str) -> tuple[Mapping[str, Any] | None, str]:
    rel = summ.get("relation", {}).get(key)
    if rel is None:
        return None, f"no clustered relation '{key}' in the summary (`cli.py drift --summary-only` writes it)"
    if "error" in rel:
        return None, f"{key}: {rel['error']}"
    return rel, (f"{key}: r {fmt_ci(rel['r'], rel['lo'], rel['hi'], 2, CORR_RANGE)} over {rel['n_runs']} runs of "
                 f"{rel['n_groups']} conditions (bootstrap over conditions)")


def _r_verdict(rel: Mapping[str, Any] | None, desc: str, what: str) -> Verdict:
    if rel is None:
        return Verdict(INCONCLUSIVE, desc, (f"{what}: not computable",))
    if rel["n_groups"] < MIN_GROUPS:
        return Verdict(INCONCLUSIVE, f"fewer than {MIN_GROUPS} training prompts to correlate over; {desc}",
                       (f"training prompts: {rel['n_groups']}, needed {MIN_GROUPS} "
                        f"({MIN_GROUPS - rel['n_groups']} short)",))
    if rel["lo"] > 0:
        return Verdict(SUPPORTED, desc)
    if rel["hi"] < 0 or abs(rel["r"]) < NEGLIGIBLE_R:
        return Verdict(NOT_SUPPORTED, desc)
    return Verdict(INCONCLUSIVE, desc, (f"{what}: CI [{rel['lo']:+.2f}, {rel['hi']:+.2f}] includes 0; its lower end "
                                        f"is {-rel['lo']:.2f} short of 0",))


def _extras(summ: Mapping[str, Any], pred: str, target: str) -> str:
    """The rank and AUROC summaries beside a linear r (drift is near 0 or near its ceiling for most prompts)."""
    rel = summ.get("relation", {})
    out = []
    rank = rel.get(f"rank:{pred}~{target}")
    if rank and "r" in rank:
        out.append(f"rank r {rank['r']:+.2f} [{rank['lo']:+.2f}, {rank['hi']:+.2f}]")
    auc = rel.get(f"auroc:{pred}~{target}")
    if auc and "auroc" in auc:
        out.append(f"AUROC for drift >= {auc['threshold']:.2f} (half of neutral's) {auc['auroc']:.2f} "
                   f"[{auc['lo']:.2f}, {auc['hi']:.2f}] over {auc['n_high']} + {auc['n_low']} prompts")
    return ("; " + ", ".join(out)) if out else ""


def c6_drift_tracks_alignment(run_dir: Path) -> Verdict:
    """C6: across training prompts, alignment before training predicts drift (r > 0, CI over conditions).
    Correlational description (issue 22): reported, not part of the answer.

    Also says which predictor has the larger |r|: alignment or the prompt's loss reduction (and its parts).
    """
    summ = drift_summary(run_dir)
    if summ is None:
        return _not_run(run_dir)
    target = main_drift(summ)
    rel, desc = _relation(summ, f"align_pre~{target}")
    v = _r_verdict(rel, desc, f"r(alignment, {target})")
    why = v.reason + _extras(summ, "align_pre", target)
    # beside r, always: r alone cannot say whether alignment or the loss reduction carries the relation
    partial, pdesc = _relation(summ, f"align_pre~{target}|loss_reduction")
    why += f"; partial r given loss reduction: {pdesc if partial is not None else 'not computed'}"
    others = {}
    for pred in ("loss_reduction", "loss_reduction_trait", "loss_reduction_content", "transfer"):
        o, odesc = _relation(summ, f"{pred}~{target}")
        if o is not None:
            others[pred] = o
            why += f"; {odesc}"
    if rel is not None and others:
        best = max([("alignment", abs(rel["r"]))] + [(k.replace("_", " "), abs(o["r"])) for k, o in others.items()],
                   key=lambda t: t[1])
        why += f"; the larger |r|: {best[0]}"
    return Verdict(v.label, why, v.shortfall)


def c7_alignment_beyond_loss(run_dir: Path) -> Verdict:
    """C7: alignment predicts drift beyond the prompt's loss reduction (partial r > 0, CI over conditions);
    given both its parts (trait, content) when they were measured, else given the total. Correlational
    description (issue 22): reported, not part of the answer, since collinearity caps it whatever the data.

    At most inconclusive when alignment and the loss reduction are nearly collinear across the runs
    (|r| > MAX_COLLINEARITY): then no partial correlation can say which carries the relation, and the
    verdict says what it would have been.
    """
    summ = drift_summary(run_dir)
    if summ is None:
        return _not_run(run_dir)
    target, relations = main_drift(summ), summ.get("relation", {})
    key = next((k for k in (f"align_pre~{target}|loss_split", f"align_pre~{target}|loss_reduction")
                if k in relations), f"align_pre~{target}|loss_reduction")
    rel, desc = _relation(summ, key)
    v = _r_verdict(rel, "partial " + desc, "partial r(alignment, drift | loss)")
    col = relations.get("collinearity") or {}
    r_col = col.get("max_abs_r")
    if r_col is not None:
        col_desc = (f"; collinearity of alignment with the loss reduction: max |r| {r_col:.3f} (cap "
                    f"{MAX_COLLINEARITY}; design acceptance <= {col['acceptance_abs_r']}: "
                    f"{'met' if col['meets_acceptance'] else 'not met'})")
    else:  # no collinearity block with a value: the clustered entry, as summaries before issue 16 had
        old = relations.get("align_pre~loss_reduction", {})
        r_col = abs(old["r"]) if "r" in old else None
        col_desc = f"; alignment vs loss reduction r {old['r']:+.3f}" if "r" in old else ""
    v = Verdict(v.label, v.reason + col_desc, v.shortfall)
    capped = r_col is not None and r_col > MAX_COLLINEARITY
    return cap(v, capped, f"nearly collinear predictors (|r| > {MAX_COLLINEARITY})",
               f"collinearity: abs r(alignment, loss reduction) {r_col:.3f}, cap {MAX_COLLINEARITY} "
               f"({r_col - MAX_COLLINEARITY:.3f} over; the design acceptance is <= 0.5)" if capped else None)


DRIFT_CLAIMS = (
    ("C5", "Inoculation reduces drift"),
    ("C6", "Drift tracks alignment (correlational description, not part of the answer)"),
    ("C7", "... beyond the training prompt's loss reduction (correlational description, not part of the answer)"),
    ("C8", "Inoculation reduces drift beyond the loss-matched control"),
)


def drift_verdicts(run_dir: Path, align: Mapping[str, Any]) -> list[Verdict]:
    return [c5_drift(run_dir), c6_drift_tracks_alignment(run_dir), c7_alignment_beyond_loss(run_dir),
            c8_drift_beyond_lossmatch(run_dir, align)]
