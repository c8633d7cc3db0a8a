"""Random unit directions are uniform on the sphere (the Monte-Carlo null's ingredient)."""

from __future__ import annotations

import numpy as np
import pytest

from nnsight_inoc.stats.nulls import random_unit_directions


def test_random_directions_unit_and_isotropic() -> None:
    d, n = 256, 4000
    dirs = random_unit_directions(d, n, rng=0)
    assert dirs.shape == (n, d) and dirs.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-12)
    fixed = np.random.default_rng(1).normal(size=d)
    cos = dirs @ fixed / np.linalg.norm(fixed)  # rows are unit vectors
    assert abs(cos.mean()) < 4 / np.sqrt(d * n)
    assert cos.std() == pytest.approx(1 / np.sqrt(d), rel=0.05)
    assert np.array_equal(dirs, random_unit_directions(d, n, rng=0))
