"""The one-line answer to the study's question, from the claims' verdicts.

"Does inoculation reduce drift *by rotating gradients away from v*?" Pre-registered in issue 22, before any
sweep, the answer needs (:data:`REQUIRED`): drift is reduced (C5: inoc below neutral); the gradients are
rotated away from v beyond the loss-matched control (C2, an alignment claim); removing v's component of the
gradient is sufficient to prevent drift, and does better than removing a random direction's (C9: zero_v
below neutral and zero_rand); and it is necessary: scaling v's component back up under the inoculation
prompt brings drift back (C10: restore_v above inoc).

* **supported** when C5, C2, C9 and C10 all are;
* **not supported** when C5 is decided against (no drift reduction to explain), or C9 or C10 is (removing
  v's share leaves drift where it was, or restoring it leaves inoculation's protection intact);
* otherwise **inconclusive** (always when C5 is), naming each measured quantity that fell short and by how
  much, from the shortfalls the rules recorded.

The correlational claims C6 and C7 (alignment vs drift across training prompts) and C8 and C11 are
reported beside the answer and do not enter it. The sentence says in words what each arm did.
"""

from __future__ import annotations

from typing import Mapping

from nnsight_inoc.report.causal_rules import headline
from nnsight_inoc.report.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict, as_verdict

REQUIRED = ("C5", "C2", "C9", "C10")
WORDS = {
    "C5": {SUPPORTED: "inoculation (inoc) drifted less than neutral",
           NOT_SUPPORTED: "inoculation (inoc) did not drift less than neutral",
           INCONCLUSIVE: "whether inoculation (inoc) drifted less than neutral is undecided"},
    "C2": {SUPPORTED: "its gradients were rotated away from v beyond the loss-matched control",
           NOT_SUPPORTED: "its gradients were not rotated away from v beyond the loss-matched control",
           INCONCLUSIVE: "whether its gradients were rotated away from v beyond the loss-matched control is undecided"},
    "C9": {SUPPORTED: "training with v's component of the gradient removed (zero_v) drifted less than neutral and "
                      "less than with a random direction's removed (zero_rand)",
           NOT_SUPPORTED: "removing v's component of the gradient (zero_v) did not prevent drift",
           INCONCLUSIVE: "whether removing v's component of the gradient (zero_v) prevents drift is undecided"},
    "C10": {SUPPORTED: "scaling v's component back up under the inoculation prompt (restore_v) brought drift back",
            NOT_SUPPORTED: "restoring v's component under the inoculation prompt (restore_v) left inoculation's "
                           "protection intact",
            INCONCLUSIVE: "whether restoring v's component under the inoculation prompt (restore_v) brings drift "
                          "back is undecided"},
}


def _words(cid: str, v: Verdict) -> str:
    """What the claim's arm did, in words, with its id; C9 decided against says which contrast decided it."""
    out = WORDS[cid][v.label]
    if cid == "C9" and v.label == NOT_SUPPORTED and v.reason.startswith("decided against"):
        return f"{out} ({cid}: {headline(v)})"
    return f"{out} ({cid})"


def answer(verdicts: Mapping[str, Verdict | tuple[str, str] | str]) -> Verdict:
    """The answer as a Verdict (label, sentence, shortfalls) from the claims' verdicts by id (rules in the
    module docstring; ``verdicts`` must hold every claim of :data:`REQUIRED`, ValueError otherwise)."""
    missing = [c for c in REQUIRED if c not in verdicts]
    if missing:
        raise ValueError(f"the answer needs claims {REQUIRED}; missing {missing}")
    v = {c: as_verdict(verdicts[c]) for c in REQUIRED}
    said = {c: _words(c, x) for c, x in v.items()}
    rest = "; ".join(said[c] for c in REQUIRED if c != "C5")
    undecided = {c: x for c, x in v.items() if x.label == INCONCLUSIVE}
    short = tuple(dict.fromkeys(s for x in undecided.values() for s in x.shortfall))
    c5 = v["C5"]
    if c5.label == NOT_SUPPORTED:
        return Verdict(NOT_SUPPORTED, f"No: {said['C5']}, so there is no drift reduction to explain. Besides: "
                                      f"{rest}.")
    if c5.label == INCONCLUSIVE:
        return Verdict(INCONCLUSIVE, f"Undecided: {said['C5']}, so the mechanism is too. Besides: {rest}."
                       + _shortfalls(undecided), short)
    if all(x.label == SUPPORTED for x in v.values()):
        return Verdict(SUPPORTED, f"Yes: {said['C5']}; {said['C2']}; {said['C9']}; and {said['C10']}: consistent "
                                  "with inoculation reducing drift by rotating gradients away from v.")
    against = [c for c in ("C9", "C10") if v[c].label == NOT_SUPPORTED]
    if against:
        others = "; ".join(said[c] for c in REQUIRED if c not in ("C5", *against))
        return Verdict(NOT_SUPPORTED, f"No: {said['C5']}, but not through v: "
                                      + "; ".join(said[c] for c in against) + f". Besides: {others}.")
    return Verdict(INCONCLUSIVE, f"Undecided: {said['C5']}, but the data do not yet attribute that to v: {rest}."
                   + _shortfalls(undecided), short)


def _shortfalls(verdicts: Mapping[str, Verdict]) -> str:
    """' What fell short: <quantity> (C9, C10); ....' (each quantity once, with the claims it held back), or a
    note naming the claims that recorded none."""
    claims: dict[str, list[str]] = {}
    for c, x in verdicts.items():
        for s in x.shortfall:
            claims.setdefault(s, []).append(c)
    parts = [f"{s} ({', '.join(cs)})" for s, cs in claims.items()]
    unnamed = [c for c, x in verdicts.items() if not x.shortfall]
    out = (" What fell short: " + "; ".join(parts) + ".") if parts else ""
    if unnamed:
        out += f" ({', '.join(unnamed)} recorded no measured shortfall.)"
    return out
