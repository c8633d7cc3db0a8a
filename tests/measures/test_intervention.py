"""The intervention arms' plain math: the edit, the cosine after scaling, restore_v's factor search, the directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnsight_inoc.measures.intervention import (
    ARMS,
    RESTORE_TOL,
    InterveneSpec,
    cos_after,
    directions_for,
    edit_gradient,
    fixed_scale,
    random_directions,
    restore_factor,
    unit,
)


def test_edit_multiplies_the_component_along_u_and_leaves_the_rest():
    g = torch.randn(3, 5, 8, dtype=torch.float64)
    u = unit(torch.randn(3, 8)).double()
    for s in (0.0, -1.0, 2.5):
        out = edit_gradient(g, u, torch.full((3,), s, dtype=torch.float64))
        along_in = (g * u[:, None]).sum(-1)
        along_out = (out * u[:, None]).sum(-1)
        torch.testing.assert_close(along_out, s * along_in)
        torch.testing.assert_close(out - along_out[..., None] * u[:, None], g - along_in[..., None] * u[:, None])
    same = edit_gradient(g, torch.zeros(3, 8, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(same, g)  # a zero direction leaves the row alone
    with pytest.raises(ValueError, match="edit shapes"):
        edit_gradient(g, u[:2], torch.zeros(3))


def test_cos_after_matches_the_edited_vectors():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(50, 16))
    v = np.zeros(16)
    v[0] = 1.0
    proj, norm = -(g @ v), np.linalg.norm(g, axis=1)
    for s in (0.0, 0.3, 1.0, 4.0):
        g2 = g.copy()
        g2[:, 0] *= s
        want = -(g2 @ v) / np.linalg.norm(g2, axis=1)
        np.testing.assert_allclose(cos_after(proj, norm, s), want, atol=1e-12)


def test_restore_factor_reaches_a_reachable_target_nearest_to_one():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(200, 32))
    g[:, 0] -= 0.3  # a positive mean cos(-g, v) along v = e0
    proj, norm = -g[:, 0], np.linalg.norm(g, axis=1)
    base = float(cos_after(proj, norm, 1.0).mean())
    for target in (base * 1.5, base * 0.5, base):
        s, reached = restore_factor(proj, norm, target)
        assert reached and abs(float(cos_after(proj, norm, s).mean()) - target) <= 10 * RESTORE_TOL
    assert restore_factor(proj, norm, base)[0] == 1.0


def test_restore_factor_says_when_no_scale_reaches_the_target():
    """Balanced signs (mean cos ~ 0, mean sign > 0): scaling moves the mean toward +, never to a negative target."""
    proj = np.array([0.5, 0.4, -0.3, -0.5, 0.2])
    norm = np.ones(5)
    s, reached = restore_factor(proj, norm, -0.2)
    assert not reached
    best = abs(float(cos_after(proj, norm, s).mean()) + 0.2)
    for other in (0.0, 0.5, 1.0, 3.0, 100.0):
        assert best <= abs(float(cos_after(proj, norm, other).mean()) + 0.2) + 1e-9
    with pytest.raises(ValueError, match="finite"):
        restore_factor(proj, norm, float("nan"))


def test_directions_and_specs():
    a, b = random_directions(4, 16, 3), random_directions(4, 16, 3)
    assert torch.equal(a, b) and not torch.equal(a, random_directions(4, 16, 4))
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(4))
    v = torch.randn(4, 16)
    torch.testing.assert_close(directions_for(InterveneSpec("zero_v", (0, 1), 0), v), unit(v))
    assert torch.equal(directions_for(InterveneSpec("zero_rand", (0,), 3), v), a)
    assert [fixed_scale(InterveneSpec(arm, (0,), 0)) for arm in ARMS] == [0.0, 0.0, -1.0, None]
    assert InterveneSpec("restore_v", (0,), 0).base_condition == "inoc"
    with pytest.raises(ValueError, match="unknown intervention arm"):
        InterveneSpec("nope", (0,), 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        InterveneSpec("zero_v", (2, 1), 0)
    with pytest.raises(ValueError, match="zero or non-finite"):
        unit(torch.zeros(2, 3))
