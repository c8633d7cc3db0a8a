"""Verdict rules C1-C4 (gradient alignment): each conclusion decided from the align summary by an explicit rule.

Why a separate module: the report's conclusions must come from code a reader can check,
not from prose written after looking at the numbers. Every rule returns
``(verdict, reason)`` where ``verdict`` is one of :data:`LABELS` and ``reason`` quotes the
numbers that decided it. The thresholds are module constants so a change is visible in
one place and in the report itself (the report prints them).

Sign convention throughout: cos(-g, v); a negative contrast (e.g. inoc - neutral < 0)
means the gradient step under the first prompt moves activations *less* toward the trait,
i.e. "away from v".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from nnsight_inoc.report.verdicts import (
    ALPHA,
    INCONCLUSIVE,
    MAX_LOSS_GAP_SHARE,
    NOT_SUPPORTED,
    SUPPORTED,
    Verdict,
    cap,
    fmt_p,
    layer_ranges,
    loss_gap_share,
)

MIN_LAYER_FRACTION = 0.25  # share of layers that must pass when the chosen layer does not
AUROC_MIN = 0.95  # held-out AUROC promote vs suppress at the chosen layer (issue 3)
R_MIN = 0.6  # monitoring Pearson r at the chosen layer (issue 3)
POSITIONS = ("a_sum", "final_prompt")  # a_sum first: the assistant tokens carry the SFT loss


@dataclass(frozen=True)
class LayerPasses:
    """Layers passing a test, split by the sign of the effect (away = negative contrast)."""

    away: tuple[int, ...]
    toward: tuple[int, ...]
    n_layers: int


def min_layers(n_layers: int) -> int:
    """Layers needed for 'supported' when the chosen layer itself does not pass."""
    return math.ceil(MIN_LAYER_FRACTION * n_layers)


def passing_layers(block: Mapping[str, Sequence[float]], *, use_boot: bool = True,
                   use_null: bool = True) -> LayerPasses:
    """Layers whose contrast passes the requested Holm-adjusted tests at :data:`ALPHA`.

    Both tests by default: the bootstrap says the difference is not sampling noise, the exact
    random-direction null says it is specific to v rather than a rotation every direction sees.
    """
    diff = block["diff_cos"]
    ok = [
        (not use_boot or block["p_boot_holm"][i] < ALPHA) and (not use_null or block["null_p_exact_holm"][i] < ALPHA)
        for i in range(len(diff))
    ]
    away = tuple(i for i, o in enumerate(ok) if o and diff[i] < 0)
    toward = tuple(i for i, o in enumerate(ok) if o and diff[i] > 0)
    return LayerPasses(away, toward, len(diff))


def position_verdict(passes: LayerPasses, chosen_layer: int) -> Verdict:
    """One position: supported if the chosen layer or >= MIN_LAYER_FRACTION of layers pass *away*
    and none pass toward; not supported if no layer passes away (none pass, or all go toward);
    inconclusive otherwise (too few layers, or significant layers of both signs)."""
    a, t, n = passes.away, passes.toward, passes.n_layers
    counts = f"{len(a)}/{n} layers away ({layer_ranges(a)}), {len(t)} toward ({layer_ranges(t)})"
    if not a:
        why = "no layer passes" if not t else "significant layers all go toward the trait"
        return NOT_SUPPORTED, f"{why}: {counts}"
    if t:
        return INCONCLUSIVE, f"mixed signs: {counts}"
    if chosen_layer in a or len(a) >= min_layers(n):
        return SUPPORTED, f"{counts}; needed the chosen layer {chosen_layer} or >= {min_layers(n)} layers"
    return INCONCLUSIVE, f"too few layers: {counts}; needed the chosen layer {chosen_layer} or >= {min_layers(n)}"


def combine_positions(per_position: Mapping[str, tuple[Verdict, LayerPasses]]) -> Verdict:
    """Across positions: significant effects of opposite sign anywhere = mixed = inconclusive;
    else supported if any position is supported, not supported if all are, inconclusive otherwise."""
    parts = "; ".join(f"{pos}: {v} ({why})" for pos, ((v, why), _) in per_position.items())
    any_away = any(p.away for _, p in per_position.values())
    any_toward = any(p.toward for _, p in per_position.values())
    verdicts = [v for (v, _), _ in per_position.values()]
    if any_away and any_toward:
        return INCONCLUSIVE, f"mixed signs across/within positions — {parts}"
    if SUPPORTED in verdicts:
        return SUPPORTED, parts
    if all(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED, parts
    return INCONCLUSIVE, parts


def contrast_verdict(align: Mapping[str, Any], contrast: str, *, use_boot: bool = True,
                     use_null: bool = True) -> Verdict:
    """Position rule on each of :data:`POSITIONS` for one contrast, then :func:`combine_positions`."""
    layer = int(align["layer"])
    per = {}
    for pos in POSITIONS:
        p = passing_layers(align["contrasts"][contrast][pos], use_boot=use_boot, use_null=use_null)
        per[pos] = (position_verdict(p, layer), p)
    return combine_positions(per)


def direction_checks(extract: Mapping[str, Any]) -> dict[str, tuple[float, float, bool]]:
    """Issue-3 thresholds at the chosen layer: name -> (value, threshold, pass)."""
    c = extract["chosen"]
    # None (JSON null) = the statistic could not be computed (e.g. constant scores): the check fails.
    return {"AUROC": (c["auroc"], AUROC_MIN, c["auroc"] is not None and c["auroc"] >= AUROC_MIN),
            "monitoring r": (c["pearson_r"], R_MIN, c["pearson_r"] is not None and c["pearson_r"] >= R_MIN)}


def direction_cap_reason(extract: Mapping[str, Any]) -> str | None:
    """A direction that fails its checks does not measure the trait, so no alignment claim can stand."""
    failed = [f"{k} {v:.3f} < {t}" for k, (v, t, ok) in direction_checks(extract).items() if not ok]
    return f"direction fails its sanity checks ({', '.join(failed)})" if failed else None


def c1_rotation(align: Mapping[str, Any]) -> Verdict:
    """C1: inoc - neutral < 0, both bootstrap-Holm and exact-null-Holm p < ALPHA, position rule."""
    return contrast_verdict(align, "inoc-neutral")


def c2_beyond_lossmatch(align: Mapping[str, Any]) -> Verdict:
    """C2: the C1 rule on inoc - lossmatch; at most inconclusive when the loss match is incomplete,
    because then a remaining difference may still be a loss effect."""
    share = loss_gap_share(align)
    gap = align["contrasts"]["inoc-lossmatch"]["loss"]
    why = (f"loss match incomplete: inoc - lossmatch loss {gap['diff']:+.4f} [{gap['lo']:+.4f}, {gap['hi']:+.4f}] "
           f"is {share:.0%} of inoc - neutral (limit {MAX_LOSS_GAP_SHARE:.0%})")
    return cap(contrast_verdict(align, "inoc-lossmatch"), share > MAX_LOSS_GAP_SHARE, why)


def c3_beyond_random(align: Mapping[str, Any]) -> Verdict:
    """C3: inoc - neutral judged by the exact random-direction null alone (Holm), position rule:
    is the change specific to v, or one every direction on the sphere would show?"""
    return contrast_verdict(align, "inoc-neutral", use_boot=False)


def regression_position(row: Mapping[str, Any]) -> tuple[Verdict, LayerPasses]:
    """One position at the chosen layer: adjusted coef CI excludes 0 and Holm p < ALPHA; negative = away."""
    coef, lo, hi, p = row["coef_adjusted"], row["coef_adjusted_lo"], row["coef_adjusted_hi"], row["coef_adjusted_p_holm"]
    nums = f"adjusted coef {coef:+.4f} [{lo:+.4f}, {hi:+.4f}], Holm p {fmt_p(p)}, partial r {row['partial_r']:+.3f}"
    sig = (hi < 0 or lo > 0) and p < ALPHA
    if sig and coef < 0:
        return (SUPPORTED, nums), LayerPasses((0,), (), 1)
    if sig:
        return (NOT_SUPPORTED, f"opposite sign: {nums}"), LayerPasses((), (0,), 1)
    return (NOT_SUPPORTED, f"not significant: {nums}"), LayerPasses((), (), 1)


def c4_regression(align: Mapping[str, Any]) -> Verdict:
    """C4: inoc vs neutral after controlling for loss and log gradient norm, at the chosen layer."""
    layer = int(align["layer"])
    per = {pos: regression_position(align["regression"][f"{pos}/inoc_vs_neutral"][layer]) for pos in POSITIONS}
    v, why = combine_positions(per)
    return v, f"layer {layer}: {why}"


CLAIMS = (
    ("C1", "Inoculation rotates gradients away from v relative to neutral"),
    ("C2", "... beyond the loss-matched control"),
    ("C3", "... beyond random directions"),
    ("C4", "... after controlling for loss (regression)"),
)
