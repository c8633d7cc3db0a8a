"""The one-line answer to the study's question, from the claims' verdicts.

"Does inoculation reduce drift *by rotating gradients away from v*?" needs, at once: drift is
reduced (C5); the gradients are rotated (C1); the rotation beats the loss-matched control (C2) and
so does the drift reduction (C8), as the study plan allows the rotation claim only if it beats that
control; and across training prompts drift follows alignment beyond what the prompt's loss
reduction explains (C7). A drift reduction alone says nothing about the mechanism.

An inconclusive answer names each measured quantity that fell short and by how much (issue 16,
item 10), from the shortfalls the rules recorded.
"""

from __future__ import annotations

from typing import Mapping

from nnsight_inoc.report.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict, as_verdict

REQUIRED = ("C5", "C1", "C2", "C7", "C8")
WHAT = {"C1": "the rotation itself", "C2": "the rotation beyond the loss-matched control",
        "C7": "alignment predicting drift beyond loss reduction",
        "C8": "the drift reduction beyond the loss-matched control"}


def answer(verdicts: Mapping[str, Verdict | tuple[str, str] | str]) -> Verdict:
    """The answer as a Verdict (label, sentence, shortfalls): supported only when every claim of
    :data:`REQUIRED` is; not supported when C5 is not, or any other required claim is not; else
    inconclusive, naming what fell short. ValueError when a required claim is missing."""
    missing = [c for c in REQUIRED if c not in verdicts]
    if missing:
        raise ValueError(f"the answer needs claims {REQUIRED}; missing {missing}")
    v = {c: as_verdict(verdicts[c]) for c in REQUIRED}
    c5 = v["C5"]
    if c5.label == NOT_SUPPORTED:
        return Verdict(NOT_SUPPORTED, "Inoculation did not reduce drift here, so there is no drift reduction to explain.")
    if c5.label == INCONCLUSIVE:
        return Verdict(INCONCLUSIVE, "Whether inoculation reduced drift is itself undecided (C5), so the mechanism "
                                     "is too." + _shortfalls({"C5": c5}), c5.shortfall)
    rest = {c: v[c] for c in REQUIRED if c != "C5"}
    if all(x.label == SUPPORTED for x in rest.values()):
        return Verdict(SUPPORTED, "Inoculation reduced drift, its gradients were rotated away from v beyond the "
                                  "loss-matched control, it drifted less than that control, and across training "
                                  "prompts drift followed alignment beyond the loss reduction: consistent with the "
                                  "hypothesis.")
    reasons = [f"{WHAT[c]} is {x.label} ({c})" for c, x in rest.items() if x.label != SUPPORTED]
    label = NOT_SUPPORTED if any(x.label == NOT_SUPPORTED for x in rest.values()) else INCONCLUSIVE
    text = ("Inoculation reduced drift (C5), but the data do not attribute that to rotated gradients: "
            + "; ".join(reasons) + ".")
    short = {c: x for c, x in rest.items() if x.label == INCONCLUSIVE}
    if label == INCONCLUSIVE:
        text += _shortfalls(short)
    return Verdict(label, text, tuple(dict.fromkeys(s for x in short.values() for s in x.shortfall)))


def _shortfalls(verdicts: Mapping[str, Verdict]) -> str:
    """' What fell short: <quantity> (C2, C8); ....' (each quantity once, with the claims it held back), or a
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
