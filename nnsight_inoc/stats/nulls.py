"""Random-direction nulls: is a change in cos(-g, v) specific to v, or one any direction would show?

The contrast in mean cosine between two conditions along a direction r is linear in r,
``<mu_a - mu_b, r>`` with ``mu`` each condition's mean unit -gradient, so its distribution
over r uniform on the sphere is known exactly (:func:`sphere_null_p`); a Monte-Carlo over
random unit directions (:func:`random_unit_directions`, :func:`null_p_values`) is reported
beside it as a check.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betainc

from nnsight_inoc.stats.bootstrap import RngLike, as_generator


def sphere_null_p(observed: np.ndarray, d_norm: np.ndarray, dim: int) -> np.ndarray:
    """Exact two-sided P(|<D, r>| >= |observed|) for r uniform on the unit sphere in ``dim`` dims.

    ``t = <D, r> / |D|`` has density proportional to (1 - t^2)^((dim - 3) / 2), so
    P(|t| >= c) = I_{1 - c^2}((dim - 1) / 2, 1 / 2) (regularised incomplete beta).
    """
    c = np.clip(np.abs(observed) / d_norm, 0.0, 1.0)
    return betainc((dim - 1) / 2.0, 0.5, 1.0 - c**2)


def null_p_values(delta_v: np.ndarray, delta_r: np.ndarray) -> np.ndarray:
    """Two-sided permutation-style p per layer/position: (1 + #|null| >= |obs|) / (1 + K).

    ``delta_v`` (L, P); ``delta_r`` (L, P, K).
    """
    exceed = (np.abs(delta_r) >= np.abs(delta_v)[..., None]).sum(-1)
    return (1 + exceed) / (1 + delta_r.shape[-1])


def random_unit_directions(d: int, n: int, rng: RngLike = 0) -> np.ndarray:
    """(n, d) float64 unit vectors uniform on the sphere (Gaussian, then normalised)."""
    if int(d) < 1 or int(n) < 1:
        raise ValueError(f"d and n must be positive, got d={d}, n={n}")
    g = as_generator(rng).standard_normal((int(n), int(d)))
    return g / np.linalg.norm(g, axis=1, keepdims=True)
