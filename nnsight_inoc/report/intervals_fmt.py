"""How an interval or a share is printed, so that no printed number is outside what its quantity can be.

* An interval whose ends pass the quantity's possible range (a t-interval of a drift difference below
  -1, a bootstrap interval of r beyond +-1) is clipped to that range, and the text says so.
* An interval of width 0 over seeds of a step-0 quantity is not an interval: the probe at step 0 is the
  same for every seed (LoRA's B matrix is 0 at init, so the adapted model is the base model). It reads
  "seed-independent (step 0)".
* A share whose denominator is near zero is not printed as a percentage (it would be a huge, meaningless
  number); the two quantities are printed instead.
"""

from __future__ import annotations

import math

SCORE_DIFF_RANGE = (-1.0, 1.0)  # a drift (post - pre) or a difference of two trait scores in [0, 1]
CORR_RANGE = (-1.0, 1.0)
SHARE_RANGE = (0.0, 1.0)
STEP0 = "seed-independent (step 0)"
MIN_SHARE_DENOMINATOR = 1e-3  # below this (nats, or the quantity's unit) a ratio is not shown as a percentage
MAX_SHARE = 10.0  # a gap over 10x its target (1000%) is printed as the two quantities, not as a percentage


def clip_interval(lo: float, hi: float, bounds: tuple[float, float] | None) -> tuple[float, float, bool]:
    """(lo, hi) clipped to ``bounds`` and whether anything was clipped."""
    if bounds is None or lo != lo or hi != hi:
        return lo, hi, False
    a, b = max(lo, bounds[0]), min(hi, bounds[1])
    return a, b, (a, b) != (lo, hi)


def clip_note(bounds: tuple[float, float]) -> str:
    return f"CI clipped to [{bounds[0]:g}, {bounds[1]:g}], the possible range"


def fmt_ci(m: float, lo: float, hi: float, d: int = 3, bounds: tuple[float, float] | None = None) -> str:
    """'m [lo, hi]' with signs, clipped to ``bounds`` with a note when it passed them."""
    lo2, hi2, clipped = clip_interval(lo, hi, bounds)
    out = f"{m:+.{d}f} [{lo2:+.{d}f}, {hi2:+.{d}f}]"
    return out + (f" ({clip_note(bounds)})" if clipped and bounds is not None else "")


def zero_width(m: float, lo: float, hi: float) -> bool:
    """An interval of (numerically) no width: every value it came from was the same."""
    return lo == lo and hi == hi and abs(hi - lo) <= 1e-12 * max(1.0, abs(m))


def fmt_share(num: float, den: float, what: str = "", min_den: float = MIN_SHARE_DENOMINATOR) -> str:
    """|num| / |den| as a percentage, or, with |den| below ``min_den``, both numbers and why no percentage."""
    if den != den or abs(den) < min_den:
        return (f"{abs(num):.4f} against {abs(den):.4f}{' ' + what if what else ''} "
                f"(not a percentage: the denominator is below {min_den:g})")
    share = abs(num) / abs(den)
    return f"{share:.0%}" if math.isfinite(share) else "undefined"


def in_interval(m: float, lo: float, hi: float) -> bool:
    """Whether the estimate lies inside its own interval (a percentile interval of a ratio need not hold it)."""
    return lo == lo and hi == hi and m == m and lo - 1e-12 <= m <= hi + 1e-12


def fmt_est(m: float, lo: float, hi: float, d: int = 3, bounds: tuple[float, float] | None = None) -> str:
    """:func:`fmt_ci`, except that an interval that is missing (NaN: one seed) or does not contain its own estimate
    is not printed as one: the estimate stands alone with the reason."""
    if m != m:
        return "n/a"
    if lo != lo or hi != hi:
        return f"{m:+.{d}f} (no interval: one value)"
    lo2, hi2, _ = clip_interval(lo, hi, bounds)
    if not in_interval(m, lo2, hi2):
        return f"{m:+.{d}f} (its interval [{lo2:+.{d}f}, {hi2:+.{d}f}] does not contain it: not an interval)"
    return fmt_ci(m, lo, hi, d, bounds)


def match_words(achieved: float, target: float, target_lo: float = math.nan, target_hi: float = math.nan,
                share_lo: float = math.nan, share_hi: float = math.nan, min_den: float = MIN_SHARE_DENOMINATOR) -> str:
    """How far a loss-reduction match is off its target, in one form for the console and the report: the signed
    gap as a share of the target's reduction ('+12.3% off'), with its interval when given and when it contains the
    estimate; no percentage when the target's reduction is below ``min_den``, its interval includes 0 (a share of
    nothing is no number) or the gap is over :data:`MAX_SHARE` times it: the two reductions instead."""
    gap = achieved - target
    tiny = target != target or abs(target) < min_den
    unsure = target_lo == target_lo and target_hi == target_hi and target_lo <= 0 <= target_hi
    huge = not tiny and abs(gap) > MAX_SHARE * abs(target)
    if tiny or unsure or huge:
        why = (f"below {min_den:g} nats" if tiny else "its interval includes 0" if unsure
               else f"under 1/{MAX_SHARE:g} of the gap")
        return (f"gap {gap:+.4f} nats to a target reduction of {target:+.4f} (no percentage: the target's reduction "
                f"is {why})")
    share = gap / abs(target)
    out = f"{share:+.1%} off"
    if share_lo == share_lo and share_hi == share_hi:
        out += (f" [{share_lo:+.1%}, {share_hi:+.1%}]" if in_interval(share, share_lo, share_hi)
                else " (its bootstrap interval does not contain the estimate: not shown)")
    return out
