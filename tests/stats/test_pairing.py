"""Per-seed pairing and the exact sign-flip test, against a brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nnsight_inoc.stats.pairing import min_sign_flip_p, paired_diffs, sign_flip_p


def _brute(d: list[float]) -> float:
    obs = abs(np.mean(d))
    pats = list(itertools.product((1, -1), repeat=len(d)))
    return sum(abs(np.mean(np.multiply(s, d))) >= obs - 1e-12 for s in pats) / len(pats)


@pytest.mark.parametrize("d", [[-0.8, -0.7, -0.9], [-0.5, 0.1, -0.4, -0.3], [0.2, -0.1, 0.05, 0.3, -0.2]])
def test_sign_flip_matches_enumeration(d: list[float]) -> None:
    assert sign_flip_p(d) == pytest.approx(_brute(d))


def test_three_seeds_can_never_reach_five_percent() -> None:
    assert sign_flip_p([-0.823, -0.785, -0.912]) == pytest.approx(0.25)  # every seed the same sign
    assert min_sign_flip_p(3) == 0.25 and min_sign_flip_p(5) == pytest.approx(1 / 16)
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0


def test_sign_flip_errors() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        sign_flip_p([])
    with pytest.raises(ValueError, match="finite"):
        sign_flip_p([1.0, float("nan")])
    with pytest.raises(ValueError, match="limited"):
        sign_flip_p(list(range(1, 23)))


def test_paired_diffs_by_seed() -> None:
    rows = [{"condition": c, "seed": s, "x": v} for c, s, v in
            (("a", 0, 1.0), ("a", 1, 2.0), ("b", 1, 0.5), ("b", 2, 9.0))]
    assert paired_diffs(rows, "a", "b", "x") == ([1], [1.5])
