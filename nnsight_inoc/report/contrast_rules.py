"""A drift contrast's verdict, and the standard contrasts the drift summary writes.

Pre-registered in issue 22, before any sweep (items 3 and 4). A contrast a - b is read at the unit of
replication (:func:`~nnsight_inoc.stats.contrasts.seed_contrast`: per-seed differences of each run's main
drift, t-interval over seeds). With a predicted direction ("a drifts less than b" or "more"):

* **supported** only when the interval excludes 0 in the predicted direction AND the estimate lies beyond
  the negligible band (|estimate| > :data:`NEGLIGIBLE_DRIFT` on the predicted side);
* **not supported** (decided against) when the whole interval lies inside +-:data:`NEGLIGIBLE_DRIFT`, or when
  it excludes 0 in the opposite direction;
* otherwise **inconclusive**, each shortfall naming the quantity and by how much it fell short; fewer than
  :data:`MIN_SEEDS` paired seeds is inconclusive, naming how many are missing.

:data:`NEGLIGIBLE_DRIFT` is the band set in issue 16 (trait-score units) and is not tuned here. The crossed
bootstrap over panel prompts and seeds (``stats.intervals.panel_intervals``) stays in the summary as
description; no verdict reads it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from nnsight_inoc.report.intervals_fmt import SCORE_DIFF_RANGE, clip_interval, clip_note
from nnsight_inoc.report.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict
from nnsight_inoc.stats.contrasts import METHOD, PANEL_MEASURE, seed_contrast

MIN_SEEDS = 3  # paired seeds a contrast needs before it can decide anything
NEGLIGIBLE_DRIFT = 0.05  # trait-score units (issue 16, kept by issue 22): a difference within +-this is no difference
LESS, MORE = "less", "more"  # the predicted direction: a drifts less (a - b < 0) or more (a - b > 0) than b
NEUTRAL, INOC = "neutral", "inoc"
ZERO_V, ZERO_RAND, FLIP_V, RESTORE_V = "zero_v", "zero_rand", "flip_v", "restore_v"  # the causal training arms
LEAK, INOC_LEAK = "leak_", "inoc_leak_"  # the leak factorial's families: leak_<X>, inoc_leak_<X>
STANDARD_PAIRS = ((INOC, NEUTRAL), (ZERO_V, NEUTRAL), (ZERO_V, ZERO_RAND), (FLIP_V, NEUTRAL), (RESTORE_V, INOC),
                  (RESTORE_V, NEUTRAL))
LATER_PAIRS = ((INOC, "leak_inoc"), ("lossmatch", NEUTRAL), ("explicit", NEUTRAL))


def factorial_targets(conditions: Sequence[str]) -> list[str]:
    """The X of every ``inoc_leak_<X>`` whose ``leak_<X>`` was run too, in condition order."""
    names = set(conditions)
    return [c[len(INOC_LEAK):] for c in conditions
            if c.startswith(INOC_LEAK) and len(c) > len(INOC_LEAK) and f"{LEAK}{c[len(INOC_LEAK):]}" in names]


def contrast_pairs(conditions: Sequence[str]) -> list[tuple[str, str]]:
    """The standard (a, b) drift contrasts whose two conditions were both run: inoc-neutral, zero_v-neutral,
    zero_v-zero_rand, flip_v-neutral, restore_v-inoc, restore_v-neutral, inoc_leak_X-leak_X (each X),
    inoc-leak_inoc, lossmatch-neutral, explicit-neutral."""
    names = set(conditions)
    fac = tuple((f"{INOC_LEAK}{x}", f"{LEAK}{x}") for x in factorial_targets(conditions))
    return [(a, b) for a, b in STANDARD_PAIRS + fac + LATER_PAIRS if a in names and b in names]


def contrasts(rows: Sequence[Mapping[str, Any]], measure: str) -> dict[str, Any]:
    """The summary's ``contrasts`` block: {"measure", "method", "min_seeds", "negligible_drift",
    "pairs": {"a-b": seed_contrast block}} over :func:`contrast_pairs` of the rows' conditions."""
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    return {"measure": measure, "method": METHOD, "min_seeds": MIN_SEEDS, "negligible_drift": NEGLIGIBLE_DRIFT,
            "pairs": {f"{a}-{b}": seed_contrast(rows, a, b, measure) for a, b in contrast_pairs(conds)}}


def measure_words(measure: str) -> str:
    return ("mean over the panel's test prompts within each run" if measure == PANEL_MEASURE
            else "neutral test prompt")


def describe(blk: Mapping[str, Any], predicted: str = LESS) -> str:
    """The numbers of a contrast block in words: estimate [t-interval], per-seed differences, sign-flip p."""
    a, b, n = blk["a"], blk["b"], blk["n_seeds"]
    head = f"{a} - {b} drift ({measure_words(blk['measure'])})"
    if n == 0:
        return f"{head}: no paired seed ({a}: seeds {blk['a_seeds']}, {b}: seeds {blk['b_seeds']})"
    per = ", ".join(f"{d:+.3f}" for d in blk["per_seed"])
    est = _num(blk["estimate"])
    lo, hi = _num(blk["lo"]), _num(blk["hi"])
    lo_p, hi_p, clipped = clip_interval(lo, hi, SCORE_DIFF_RANGE)  # printed within the possible range
    ci = (f" [{lo_p:+.3f}, {hi_p:+.3f}] ({blk['level']:.0%} t-interval over seeds"
          f"{'; ' + clip_note(SCORE_DIFF_RANGE) if clipped else ''})" if _finite(lo, hi) else "")
    side = sum(d < 0 for d in blk["per_seed"]) if predicted == LESS else sum(d > 0 for d in blk["per_seed"])
    flip = blk.get("sign_flip_p")
    flip_txt = (f"; exact sign-flip p {flip:.3f} (the smallest possible with {n} seeds is "
                f"{blk['min_sign_flip_p']:.3f})" if flip is not None and flip == flip else "")
    return (f"{head}, mean of {n} per-seed differences {est:+.3f}{ci}; per seed {blk['seeds']}: {per}; "
            f"{side}/{n} seeds {'lower' if predicted == LESS else 'higher'} (reported, not a test){flip_txt}")


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _finite(*xs: float) -> bool:
    return all(math.isfinite(x) for x in xs)


def contrast_verdict(blk: Mapping[str, Any], predicted: str = LESS) -> Verdict:
    """The verdict on "a drifts ``predicted`` than b" from a :func:`~nnsight_inoc.stats.contrasts.seed_contrast`
    block (rules in the module docstring; threshold :data:`NEGLIGIBLE_DRIFT`, pre-registered in issue 22)."""
    if predicted not in (LESS, MORE):
        raise ValueError(f"predicted must be {LESS!r} or {MORE!r}, got {predicted!r}")
    a, b, n = blk["a"], blk["b"], blk["n_seeds"]
    what, desc, band = f"{a} - {b} drift", describe(blk, predicted), NEGLIGIBLE_DRIFT
    if n < MIN_SEEDS:
        return Verdict(INCONCLUSIVE, f"fewer than {MIN_SEEDS} paired seeds; {desc}",
                       (f"paired seeds {a} vs {b}: {n}, needed {MIN_SEEDS} ({MIN_SEEDS - n} missing)",))
    est, lo, hi = _num(blk["estimate"]), _num(blk["lo"]), _num(blk["hi"])
    if not _finite(est, lo, hi):
        return Verdict(INCONCLUSIVE, f"drift not computable for some seed; {desc}", (f"{what}: not computable",))
    s = -1.0 if predicted == LESS else 1.0
    toward = hi < 0 if s < 0 else lo > 0
    against = lo > 0 if s < 0 else hi < 0
    beyond = s * est > band
    if toward and beyond:
        return Verdict(SUPPORTED, desc)
    if against:
        return Verdict(NOT_SUPPORTED, f"the other way: {desc}")
    if -band < lo and hi < band:
        return Verdict(NOT_SUPPORTED, f"no difference beyond +-{band}: the whole interval lies inside the "
                                      f"negligible band; {desc}")
    short = []
    if not toward:
        end, word = (hi, "upper") if s < 0 else (lo, "lower")
        short.append(f"{what}: the CI's {word} end {end:+.3f} must be {'below' if s < 0 else 'above'} 0 "
                     f"({abs(end):.3f} short)")
    if not beyond:
        if abs(est) <= band:
            short.append(f"{what}: estimate {est:+.3f} is inside the +-{band} negligible band "
                         f"({band - abs(est):.3f} short)")
        else:
            short.append(f"{what}: estimate {est:+.3f} is on the wrong side, it must be "
                         f"{'below' if s < 0 else 'above'} {s * band:+.2f} ({abs(est - s * band):.3f} short)")
    why = "CI includes 0" if not toward else f"estimate inside the +-{band} band"
    return Verdict(INCONCLUSIVE, f"{why}: {desc}", tuple(short))


def seed_verdict(rows: Sequence[Mapping[str, Any]], a: str, b: str, measure: str,
                 predicted: str = LESS) -> tuple[Verdict, dict[str, Any]]:
    """(verdict, block) for a - b on the summary's rows: :func:`contrast_verdict` of
    :func:`~nnsight_inoc.stats.contrasts.seed_contrast`."""
    blk = seed_contrast(rows, a, b, measure)
    return contrast_verdict(blk, predicted), blk
