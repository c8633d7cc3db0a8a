"""Verdicts on the causal training arms (C9, C10) and the leak factorial (C11).

Pre-registered in issue 22, before any sweep. The arms change the gradient itself during LoRA training:
``zero_v`` removes the component of the residual-stream gradient along v (neutral prompt), ``zero_rand``
removes a fixed random direction's component instead (neutral prompt), ``flip_v`` reverses the component
along v (neutral prompt), ``restore_v`` trains under the inoculation prompt with the component along v
scaled up until its alignment equals neutral's. Every contrast is read by
:func:`.contrast_rules.contrast_verdict` on the summary's rows (per-seed main drift, t-interval over >= 3
paired seeds, estimate beyond the +-0.05 negligible band).

* C9, sufficiency: zero_v drifts less than neutral AND less than zero_rand. Supported when both contrasts
  are; decided against when either is (the verdict says which); else inconclusive.
* C10, necessity: restore_v drifts more than inoc. Decided against when restoring v's share leaves
  inoculation's protection intact.
* C11, the factorial: inoc_leak_X drifts less than leak_X for each X run (same content leak, same loss
  match; only the inoculation prompt differs). The label is X = inoc's (else the first X's); the others are
  reported beside it. If supported, something other than the leak's content carries inoculation's effect.

A missing arm makes its claim inconclusive, "not run", naming the conditions missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from nnsight_inoc.report.contrast_rules import (
    INOC,
    INOC_LEAK,
    LEAK,
    LESS,
    MORE,
    NEUTRAL,
    RESTORE_V,
    ZERO_RAND,
    ZERO_V,
    describe,
    factorial_targets,
    seed_contrast,
    seed_verdict,
)
from nnsight_inoc.report.drift_rules import DRIFT_SUMMARY, main_drift
from nnsight_inoc.report.load import drift_summary
from nnsight_inoc.report.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict

CAUSAL_CLAIMS = (
    ("C9", "Removing v's share of the gradient prevents drift (sufficiency: zero_v below neutral and zero_rand)"),
    ("C10", "Restoring v's share under the inoculation prompt brings drift back (necessity: restore_v above inoc)"),
    ("C11", "The inoculation prompt reduces drift at a matched content leak (factorial: inoc_leak_X below leak_X)"),
)


def headline(v: Verdict) -> str:
    """The plain-words first sentence of a C9-C11 reason (up to the first '. '), for the answer's sentence."""
    return v.reason.split(". ", 1)[0]


def _not_run(summ: Mapping[str, Any] | None, needed: Sequence[str]) -> Verdict | None:
    """Inconclusive "not run" when the summary or any of ``needed`` conditions is absent; None otherwise."""
    if summ is None:
        return Verdict(INCONCLUSIVE, f"not run: no {DRIFT_SUMMARY}", ("drift not measured",))  # as drift_rules says it
    have = {r["condition"] for r in summ["rows"]}
    missing = [c for c in needed if c not in have]
    if not missing:
        return None
    return Verdict(INCONCLUSIVE, f"not run: no {', '.join(missing)} runs in the drift summary",
                   (f"{', '.join(missing)} runs: not run",))


def c9_sufficiency(summ: Mapping[str, Any] | None) -> Verdict:
    """C9, sufficiency (pre-registered in issue 22, before any sweep): zero_v - neutral < 0 AND zero_v -
    zero_rand < 0, each by :func:`.contrast_rules.contrast_verdict` (t-interval over >= 3 paired seeds below 0,
    estimate below -0.05). Supported when both are; decided against when either is, naming which; else
    inconclusive with both contrasts' shortfalls. ``summ``: the drift summary (None when absent)."""
    gone = _not_run(summ, (ZERO_V, NEUTRAL, ZERO_RAND))
    if gone is not None:
        return gone
    assert summ is not None
    m, rows = main_drift(summ), summ["rows"]
    vs = {b: seed_verdict(rows, ZERO_V, b, m, LESS)[0] for b in (NEUTRAL, ZERO_RAND)}
    details = "; ".join(f"zero_v vs {b}: {v.label} ({v.reason})" for b, v in vs.items())
    if all(v.label == SUPPORTED for v in vs.values()):
        return Verdict(SUPPORTED, "training with v's component of the gradient removed (zero_v) drifted less than "
                                  "neutral and less than with a random direction's removed (zero_rand). "
                                  f"{details}")
    against = [b for b, v in vs.items() if v.label == NOT_SUPPORTED]
    if against:
        words = {NEUTRAL: "zero_v - neutral (removing v's component left drift where neutral's was)",
                 ZERO_RAND: "zero_v - zero_rand (removing v's component did no better than removing a random "
                            "direction's)"}
        return Verdict(NOT_SUPPORTED, f"decided against by {' and by '.join(words[b] for b in against)}. {details}")
    short = tuple(s for v in vs.values() if v.label != SUPPORTED for s in v.shortfall)
    return Verdict(INCONCLUSIVE, f"whether removing v's component (zero_v) prevents drift is undecided. {details}",
                   short)


def c10_necessity(summ: Mapping[str, Any] | None) -> Verdict:
    """C10, necessity (pre-registered in issue 22, before any sweep): restore_v - inoc > 0 by
    :func:`.contrast_rules.contrast_verdict` (t-interval over >= 3 paired seeds above 0, estimate above +0.05).
    Decided against when restoring v's share leaves inoculation's protection intact (the whole interval
    inside +-0.05, or below 0). restore_v - neutral is described beside it."""
    gone = _not_run(summ, (RESTORE_V, INOC))
    if gone is not None:
        return gone
    assert summ is not None
    m, rows = main_drift(summ), summ["rows"]
    v = seed_verdict(rows, RESTORE_V, INOC, m, MORE)[0]
    beside = ""
    if any(r["condition"] == NEUTRAL for r in rows):
        beside = f"; beside it (description): {describe(seed_contrast(rows, RESTORE_V, NEUTRAL, m), MORE)}"
    head = {SUPPORTED: "restoring v's share under the inoculation prompt (restore_v) brought drift back above "
                       "inoc's",
            NOT_SUPPORTED: "restoring v's share under the inoculation prompt (restore_v) left inoculation's "
                           "protection intact",
            INCONCLUSIVE: "whether restoring v's share (restore_v) brings drift back is undecided"}[v.label]
    return Verdict(v.label, f"{head}. restore_v vs inoc: {v.reason}{beside}", v.shortfall)


def c11_factorial(summ: Mapping[str, Any] | None) -> Verdict:
    """C11, the factorial (pre-registered in issue 22, before any sweep): inoc_leak_X - leak_X < 0 for each X
    run, by :func:`.contrast_rules.contrast_verdict`. The label is X = inoc's when run, else the first X's;
    every other X is reported beside it. Same content leak, same loss match: if supported, something other
    than the leak's content carries inoculation's effect."""
    gone = _not_run(summ, ())
    if gone is not None:
        return gone
    assert summ is not None
    xs = factorial_targets(list(dict.fromkeys(r["condition"] for r in summ["rows"])))
    if not xs:
        return Verdict(INCONCLUSIVE, f"not run: no {INOC_LEAK}<X> runs with their {LEAK}<X> in the drift summary",
                       (f"{INOC_LEAK}<X> and {LEAK}<X> runs: not run",))
    m, rows = main_drift(summ), summ["rows"]
    vs = {x: seed_verdict(rows, f"{INOC_LEAK}{x}", f"{LEAK}{x}", m, LESS)[0] for x in xs}
    main = INOC if INOC in vs else xs[0]
    v = vs[main]
    head = {SUPPORTED: f"at the same content leak (X = {main}) the inoculation prompt still reduced drift",
            NOT_SUPPORTED: f"at the same content leak (X = {main}) the inoculation prompt did not reduce drift",
            INCONCLUSIVE: f"at the same content leak (X = {main}) whether the inoculation prompt reduces drift is "
                          "undecided"}[v.label]
    others = "; ".join(f"X = {x}: {o.label} ({o.reason})" for x, o in vs.items() if x != main)
    return Verdict(v.label, f"{head}. X = {main}: {v.reason}" + (f"; other X, reported: {others}" if others else ""),
                   v.shortfall)


def causal_verdicts(run_dir: Path) -> list[Verdict]:
    """C9, C10, C11 (in :data:`CAUSAL_CLAIMS` order) from the run folder's drift summary."""
    summ = drift_summary(run_dir)
    return [c9_sufficiency(summ), c10_necessity(summ), c11_factorial(summ)]
