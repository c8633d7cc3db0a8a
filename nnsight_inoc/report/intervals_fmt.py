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
