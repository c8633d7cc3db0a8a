"""Verdict rules C1-C4 (gradient alignment): each conclusion decided from the align summary by an explicit rule.

Why a separate module: the report's conclusions must come from code a reader can check,
not from prose written after looking at the numbers. Every rule returns a
:class:`~.verdicts.Verdict` (label, the numbers that decided it, and what fell short when it is
inconclusive). The thresholds are module constants so a change is visible in one place and in
the report itself (the report prints them).

Where the test is (issue 16): C1-C4 are judged at one layer and one position fixed by rule before
any contrast is seen: the reporting layer the extract stage chose from the direction's own checks
(held-out AUROC, then monitoring r) and the summed assistant tokens ``a_sum`` (where the SFT loss
acts). Searching 2 positions x 28 layers for significant signs made a small effect inconclusive
almost by construction. Every layer and the final prompt token are still shown, as description
(:func:`layer_description`, the old layer-count rule :func:`contrast_verdict`).

Sign convention throughout: cos(-g, v); a negative contrast (e.g. inoc - neutral < 0)
means the gradient step under the first prompt moves activations *less* toward the trait,
i.e. "away from v".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from nnsight_inoc.report.control_c import at_layer
from nnsight_inoc.report.controls import leak_target
from nnsight_inoc.report.structured_rules import NOT_MEASURED, structured_check
from nnsight_inoc.report.verdicts import (
    ALPHA,
    INCONCLUSIVE,
    MAX_LOSS_GAP_SHARE,
    NOT_SUPPORTED,
    SUPPORTED,
    Verdict,
    cap,
    control_of,
    fmt_p,
    layer_ranges,
    loss_gap_share,
    loss_gap_words,
    loss_match_shortfall,
)

MIN_LAYER_FRACTION = 0.25  # share of layers that must pass when the chosen layer does not
AUROC_MIN = 0.95  # held-out AUROC promote vs suppress at the chosen layer (issue 3)
R_MIN = 0.6  # monitoring Pearson r at the chosen layer (issue 3)
POSITIONS = ("a_sum", "final_prompt")  # a_sum first: the assistant tokens carry the SFT loss
REPORT_POSITION = "a_sum"  # the one position C1-C4 are judged at (fixed by rule, see the module docstring)


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


def position_verdict(passes: LayerPasses, chosen_layer: int) -> tuple[str, str]:
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


def combine_positions(per_position: Mapping[str, tuple[tuple[str, str], LayerPasses]]) -> Verdict:
    """Across positions: significant effects of opposite sign anywhere = mixed = inconclusive;
    else supported if any position is supported, not supported if all are, inconclusive otherwise."""
    parts = "; ".join(f"{pos}: {v} ({why})" for pos, ((v, why), _) in per_position.items())
    any_away = any(p.away for _, p in per_position.values())
    any_toward = any(p.toward for _, p in per_position.values())
    verdicts = [v for (v, _), _ in per_position.values()]
    if any_away and any_toward:
        return Verdict(INCONCLUSIVE, f"mixed signs across/within positions — {parts}")
    if SUPPORTED in verdicts:
        return Verdict(SUPPORTED, parts)
    if all(v == NOT_SUPPORTED for v in verdicts):
        return Verdict(NOT_SUPPORTED, parts)
    return Verdict(INCONCLUSIVE, parts)


def contrast_verdict(align: Mapping[str, Any], contrast: str, *, use_boot: bool = True,
                     use_null: bool = True) -> Verdict:
    """The pre-issue-16 rule, now description only: the position rule (chosen layer or >= 25% of layers,
    Holm) on each of :data:`POSITIONS` for one contrast, then :func:`combine_positions`."""
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


def direction_shortfall(extract: Mapping[str, Any]) -> str | None:
    """The direction checks that failed, each with how far it fell short of its threshold."""
    failed = [f"{k} {v:.3f}, needed >= {t} ({t - v:.3f} short)" for k, (v, t, ok) in direction_checks(extract).items()
              if not ok and v == v]
    failed += [f"{k} not computable" for k, (v, _, ok) in direction_checks(extract).items() if not ok and v != v]
    return f"direction checks: {'; '.join(failed)}" if failed else None


def layer_description(align: Mapping[str, Any], contrast: str, *, use_boot: bool = True, use_null: bool = True) -> str:
    """Every layer at both positions, as description (never the verdict): Holm-passing layers by sign."""
    parts = []
    for pos in POSITIONS:
        p = passing_layers(align["contrasts"][contrast][pos], use_boot=use_boot, use_null=use_null)
        parts.append(f"{pos}: {len(p.away)}/{p.n_layers} layers away ({layer_ranges(p.away)}), {len(p.toward)} toward "
                     f"({layer_ranges(p.toward)})")
    return "all layers, Holm, description only: " + "; ".join(parts)


def contrast_numbers(align: Mapping[str, Any], contrast: str, position: str = REPORT_POSITION,
                     source: Mapping[str, Any] | None = None) -> tuple[tuple[float, ...], str]:
    """(diff, lo, hi, p boot, exact null p) at the reporting layer and ``position`` of ``source`` (default the
    summary's ``contrasts``; issue 22's ``beyond_leak["contrasts"]`` for the b positions), and them in words."""
    layer = int(align["layer"])
    b = (align["contrasts"] if source is None else source)[contrast][position]
    d, lo, hi, pb, pn = (b[k][layer] for k in ("diff_cos", "lo", "hi", "p_boot", "null_p_exact"))
    return (d, lo, hi, pb, pn), (f"layer {layer}, {position}: {contrast} cos {d:+.4f} [{lo:+.4f}, {hi:+.4f}], "
                                 f"bootstrap p {fmt_p(pb)}, exact random-direction null p {fmt_p(pn)}")


def fixed_contrast(align: Mapping[str, Any], contrast: str, *, use_boot: bool = True, use_null: bool = True,
                   position: str = REPORT_POSITION, source: Mapping[str, Any] | None = None) -> Verdict:
    """One contrast at the reporting layer and :data:`REPORT_POSITION`: supported when the difference is
    below 0 with its bootstrap CI below 0 (``use_boot``) and the exact random-direction null p < ALPHA
    (``use_null``); not supported otherwise (no effect, one toward the trait, or one any direction shows).
    One pre-specified test, so neither p is adjusted for layers. ``position``/``source``: see
    :func:`contrast_numbers` (the layer description is of the summary's own positions either way)."""
    (d, lo, hi, pb, pn), nums = contrast_numbers(align, contrast, position, source)
    ci_ok = hi < 0 if use_boot else True
    null_ok = pn < ALPHA if use_null else True
    desc = layer_description(align, contrast, use_boot=use_boot, use_null=use_null)
    if d < 0 and ci_ok and null_ok:
        return Verdict(SUPPORTED, f"{nums}; {desc}")
    why = ("toward the trait" if (lo > 0 if use_boot else d > 0) else
           "CI includes 0" if use_boot and not ci_ok else
           f"not specific to v (null p >= {ALPHA})" if not null_ok else "no effect")
    return Verdict(NOT_SUPPORTED, f"{why}: {nums}; {desc}")


def c1_rotation(align: Mapping[str, Any]) -> Verdict:
    """C1: inoc - neutral < 0 at the reporting layer and a_sum (bootstrap CI below 0, exact null p < ALPHA), and,
    when the summary has issue 22's structured null, beyond it (:mod:`.structured_rules`): a sphere-supported
    C1 that the structured null does not confirm is inconclusive, naming the shortfall."""
    sphere = fixed_contrast(align, "inoc-neutral")
    check = structured_check(align.get("structured_null"))
    if check is None:
        return Verdict(sphere.label, f"{sphere.reason}; {NOT_MEASURED}", sphere.shortfall)
    ok, nums, short = check
    if sphere.label != SUPPORTED:
        return Verdict(sphere.label, f"{sphere.reason}; {nums}", sphere.shortfall)
    if ok:
        return Verdict(SUPPORTED, f"{sphere.reason}; beyond the structured null: {nums}")
    return Verdict(INCONCLUSIVE, f"the random-sphere rule passes but not the structured null ({'; '.join(short)}): "
                                 f"{nums}; sphere rule: {sphere.reason}", short)


def _c2_position(align: Mapping[str, Any], control: str) -> tuple[Verdict, str]:
    """C2's uncapped verdict and where it was read: at b_sum (beyond the longest quote) when the control is a
    content leak and the summary has ``beyond_leak``; else at a_sum as before issue 22 (and, for a leak,
    saying that a_sum lies inside the quoted words)."""
    key = f"inoc-{control}"
    bl = align.get("beyond_leak")
    if leak_target(control) is None:
        return fixed_contrast(align, key), ""
    if isinstance(bl, Mapping) and key in bl.get("contrasts", {}):
        v = fixed_contrast(align, key, position="b_sum", source=bl["contrasts"])
        _, quoted = contrast_numbers(align, key)
        where = (f"judged at b_sum, the {len(bl['positions']) - 1} completion tokens after the longest quote "
                 f"({bl['words']} words; {bl['n_examples']} examples, {bl['n_excluded']} excluded as too short); "
                 f"inside the quote (description, not the verdict): {quoted}")
        return Verdict(v.label, f"{v.reason}; {where}", v.shortfall), where
    note = ("judged at a_sum, inside the quoted words: positions beyond the quote were not measured (the summary "
            "predates issue 22)")
    v = fixed_contrast(align, key)
    return Verdict(v.label, f"{v.reason}; {note}", v.shortfall), note


def c2_beyond_lossmatch(align: Mapping[str, Any]) -> Verdict:
    """C2: the C1 rule (sphere part) on inoc - control (the content leak when measured, else the pool prompt); at
    most inconclusive when the loss match is incomplete, because then a remaining difference may still be a
    loss effect. Against a content leak it is read beyond the longest quote (b_sum, issue 22) when measured:
    inside the quote the quote itself turns the gradient toward v."""
    control = control_of(align)
    share = loss_gap_share(align, control)
    gap = align["contrasts"][f"inoc-{control}"]["loss"]
    why = (f"loss match incomplete: inoc - {control} loss {gap['diff']:+.4f} [{gap['lo']:+.4f}, {gap['hi']:+.4f}] "
           f"is {loss_gap_words(align, control)} of inoc - neutral (limit {MAX_LOSS_GAP_SHARE:.0%})")
    verdict, _ = _c2_position(align, control)
    return cap(verdict, share > MAX_LOSS_GAP_SHARE, why, loss_match_shortfall(share, control))


def c3_beyond_random(align: Mapping[str, Any]) -> Verdict:
    """C3: inoc - neutral judged by the exact random-direction null alone at the reporting layer and a_sum:
    is the change specific to v, or one every direction on the sphere would show?"""
    return fixed_contrast(align, "inoc-neutral", use_boot=False)


def regression_position(row: Mapping[str, Any]) -> tuple[tuple[str, str], LayerPasses]:
    """Today's regression at one position (description since issue 16): adjusted coef CI excludes 0 and Holm
    p < ALPHA; negative = away."""
    coef, lo, hi, p = row["coef_adjusted"], row["coef_adjusted_lo"], row["coef_adjusted_hi"], row["coef_adjusted_p_holm"]
    nums = f"adjusted coef {coef:+.4f} [{lo:+.4f}, {hi:+.4f}], Holm p {fmt_p(p)}, partial r {row['partial_r']:+.3f}"
    sig = (hi < 0 or lo > 0) and p < ALPHA
    if sig and coef < 0:
        return (SUPPORTED, nums), LayerPasses((0,), (), 1)
    if sig:
        return (NOT_SUPPORTED, f"opposite sign: {nums}"), LayerPasses((), (0,), 1)
    return (NOT_SUPPORTED, f"not significant: {nums}"), LayerPasses((), (), 1)


def c4_legacy_regression(align: Mapping[str, Any]) -> Verdict:
    """Today's C4 (kept for reading old reports; no longer the verdict): inoc vs neutral after controlling for
    z(loss) and z(log gradient norm) across examples, at the chosen layer, both positions."""
    layer = int(align["layer"])
    per = {pos: regression_position(align["regression"][f"{pos}/inoc_vs_neutral"][layer]) for pos in POSITIONS}
    v, why = combine_positions(per)
    return Verdict(v, f"layer {layer}: {why}")


def _intercept_words(block: Mapping[str, Any], cond: str) -> str:
    a = block["intercept"][cond]
    return f"{cond} at dloss = 0: {a['est']:+.4f} [{a['lo']:+.4f}, {a['hi']:+.4f}] (p {fmt_p(a['p_boot'])})"


def c4_regression(align: Mapping[str, Any], example: Mapping[str, Any] | None) -> Verdict:
    """C4: inoc's change in alignment at zero change in loss, per example (control C, issue 16), at the
    reporting layer and a_sum: supported when its CI lies below 0; not supported when it does not. The
    mediator model (+ change in log |g|) and the final prompt token are reported, never decide."""
    layer = int(align["layer"])
    pair = None if example is None else at_layer(example, REPORT_POSITION, layer)
    if pair is None or "error" in pair.get("primary", {}):
        why = "not computable" + ("" if pair is None else f": {pair['primary']['error']}")
        return Verdict(INCONCLUSIVE, f"example-level control C {why}", (f"control C {why}",))
    prim = pair["primary"]
    if "inoc" not in prim["intercept"]:
        return Verdict(INCONCLUSIVE, "no inoc condition in the example-level model", ("control C: no inoc condition",))
    a = prim["intercept"]["inoc"]
    slope = prim["slope"]
    r_in = prim["r_dcos_dloss"].get("inoc")
    nums = (f"layer {layer}, {REPORT_POSITION}: {_intercept_words(prim, 'inoc')}; shared slope "
            f"{slope['est']:+.4f} cos/nat [{slope['lo']:+.4f}, {slope['hi']:+.4f}]; r(dcos, dloss) within inoc "
            + ("n/a" if r_in is None or r_in != r_in else f"{r_in:+.2f}"))
    med = pair.get("mediator")
    if isinstance(med, Mapping) and "intercept" in med:
        nums += f"; mediator model (+ change in log |g|, description): {_intercept_words(med, 'inoc')}"
    fp = at_layer(example, "final_prompt", layer)
    if fp and "intercept" in fp.get("primary", {}) and "inoc" in fp["primary"]["intercept"]:
        nums += f"; final prompt (description): {_intercept_words(fp['primary'], 'inoc')}"
    if a["hi"] < 0:
        return Verdict(SUPPORTED, nums)
    return Verdict(NOT_SUPPORTED, ("toward the trait: " if a["lo"] > 0 else "CI includes 0: ") + nums)


CLAIMS = (
    ("C1", "Inoculation rotates gradients away from v relative to neutral"),
    ("C2", "... beyond the loss-matched control"),
    ("C3", "... beyond random directions"),
    ("C4", "... after controlling for loss (per example)"),
)
