"""Verdict labels and the helpers both rule families share (alignment C1-C4, drift C5-C8).

Every rule returns ``(verdict, reason)``: one of :data:`LABELS` and the numbers that decided
it. Thresholds are module constants so a change is visible in one place and in the report.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
LABELS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
ALPHA = 0.05  # family-wise level for every Holm-adjusted p-value
MAX_LOSS_GAP_SHARE = 0.25  # |inoc - lossmatch loss| / |inoc - neutral loss| above this = incomplete match
Verdict = tuple[str, str]


def fmt_p(p: float) -> str:
    """p-values span 1e-30 (exact null) to 1; fixed decimals would print 0.000 for both 1e-4 and 1e-30."""
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def layer_ranges(layers: Sequence[int]) -> str:
    """'12–27' instead of sixteen numbers; readers compare ranges across contrasts."""
    if not layers:
        return "none"
    out, start, prev = [], layers[0], layers[0]
    for x in list(layers[1:]) + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}" if start == prev else f"{start}–{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(out)


def loss_gap_share(align: Mapping[str, Any]) -> float:
    """|inoc - lossmatch| / |inoc - neutral| mean SFT loss on the studied examples: 0 = fully matched."""
    gap = align["contrasts"]["inoc-lossmatch"]["loss"]["diff"]
    full = align["contrasts"]["inoc-neutral"]["loss"]["diff"]
    if full == 0:
        raise ValueError("inoc and neutral have identical mean loss; the loss-match share is undefined")
    return abs(gap) / abs(full)


def cap(verdict: Verdict, condition: bool, why: str) -> Verdict:
    """At most inconclusive when ``condition`` holds; the uncapped result stays in the reason."""
    v, reason = verdict
    if condition and v != INCONCLUSIVE:
        return INCONCLUSIVE, f"{why} (uncapped: {v}: {reason})"
    if condition:
        return INCONCLUSIVE, f"{why}; {reason}"
    return verdict
