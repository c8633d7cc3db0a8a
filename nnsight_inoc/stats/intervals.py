"""Intervals over a handful of values (seeds), where a bootstrap has too few distinct resamples.

With 3 seeds a percentile bootstrap of the mean can take only 10 distinct values, so the
per-seed comparisons of finetune runs use a Student t-interval of the mean instead; the
report says so wherever it prints one.
"""

from __future__ import annotations

import math
from typing import Sequence

from scipy import stats as sps

CI_LEVEL = 0.95


def mean_ci(x: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n): the mean and its two-sided t-interval at ``level``.

    NaN bounds with fewer than 2 values (no spread to estimate); all NaN and n = 0 when empty.
    """
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = sum(x) / n
    if n < 2:
        return m, math.nan, math.nan, n
    sd = math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return m, m - half, m + half, n
