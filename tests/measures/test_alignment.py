"""Alignment metrics: sign convention, the sum position, and the random-direction null."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnsight_inoc.measures.alignment import metrics, unit_neg_grad_sum, with_sum
from nnsight_inoc.stats.nulls import (
    null_p_values,
    random_unit_directions,
    sphere_null_p,
)


def test_sign_convention_and_values():
    v = torch.tensor([[1.0, 0.0]])  # (L=1, d=2)
    g = torch.tensor([[[[-2.0, 0.0]], ]])  # (B=1, L=1, P=1, d): -g points along +v
    m = metrics(g, v)
    assert m.cos.item() == pytest.approx(1.0) and m.proj.item() == pytest.approx(2.0) and m.norm.item() == 2.0
    g2 = torch.tensor([[[[3.0, 4.0]]]])
    m2 = metrics(g2, v)
    assert m2.cos.item() == pytest.approx(-0.6) and m2.norm.item() == pytest.approx(5.0)


def test_zero_gradient_has_no_angle():
    m = metrics(torch.zeros(1, 1, 1, 3), torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.isnan(m.cos).all()
    with pytest.raises(FloatingPointError):
        unit_neg_grad_sum(torch.zeros(1, 1, 1, 3))


def test_with_sum_adds_assistant_gradients():
    g = torch.randn(2, 3, 4, 5)
    s = with_sum(g)
    assert s.shape == (2, 3, 5, 5)
    torch.testing.assert_close(s[:, :, -1], g[:, :, 1:].sum(2))


def test_contrast_is_linear_in_direction():
    """mean cos(-g_a, r) - mean cos(-g_b, r) == <mu_a - mu_b, r> for every r: the null needs only mu."""
    gen = torch.Generator().manual_seed(0)
    ga, gb = torch.randn(50, 2, 1, 16, generator=gen), torch.randn(50, 2, 1, 16, generator=gen)
    r = torch.from_numpy(random_unit_directions(16, 2, rng=1)).float()  # one direction per layer
    direct = metrics(ga, r).cos.mean(0) - metrics(gb, r).cos.mean(0)
    mu = (unit_neg_grad_sum(ga) - unit_neg_grad_sum(gb)) / 50
    via_mu = torch.einsum("lpd,ld->lp", mu, r.double())
    torch.testing.assert_close(direct.double(), via_mu, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dim", [3, 64, 1536])
def test_exact_sphere_null_matches_monte_carlo(dim):
    rng = np.random.default_rng(dim)
    D = rng.normal(size=dim)
    # 1e5 draws: the Monte-Carlo p has sd <= 0.0016 (at p = 0.5), so abs=0.004 is 2.5 sd; fixed seeds (largest seen 0.0019)
    r = random_unit_directions(dim, 100_000, rng=2)
    proj = r @ D
    for q in (0.5, 0.9, 0.99):
        obs = np.quantile(np.abs(proj), q)
        p = sphere_null_p(np.array([obs]), np.array([np.linalg.norm(D)]), dim)[0]
        assert p == pytest.approx(1 - q, abs=0.004)
    assert sphere_null_p(np.array([0.0]), np.array([1.0]), dim)[0] == pytest.approx(1.0)


def test_permutation_p_floor_and_ties():
    p = null_p_values(np.array([[5.0, 0.0]]), np.array([[[1.0, -2.0, 3.0], [0.0, 1.0, -1.0]]]))
    np.testing.assert_allclose(p, [[1 / 4, 1.0]])
