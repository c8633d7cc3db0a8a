"""Holm and Benjamini-Hochberg against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from nnsight_inoc.stats.multiple import benjamini_hochberg, holm


def test_holm_and_bh_hand_computed() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 -> Holm 4*.005=.02, 3*.01=.03, 2*.03=.06, max(.04,.06)=.06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    # BH: .005*4/1=.02, .01*4/2=.02, .03*4/3=.04, .04*4/4=.04 (already monotone)
    np.testing.assert_allclose(benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    q = np.array([0.5, 0.8, 0.3])
    # Holm: .3*3=.9, .5*2=1.0, max(.8, 1.0)=1.0
    np.testing.assert_allclose(holm(q), [1.0, 1.0, 0.9])
    # BH: .3*3=.9, .5*3/2=.75, .8 -> running min from the top: .75, .75, .8
    np.testing.assert_allclose(benjamini_hochberg(q), [0.75, 0.8, 0.75])
    r = np.array([0.02, 0.02, 0.9, 0.6])  # ties; 2-D shape is kept
    # Holm: .08, max(.06,.08)=.08, max(2*.6=1.2->1, ...)=1, 1
    np.testing.assert_allclose(holm(r.reshape(2, 2)), [[0.08, 0.08], [1.0, 1.0]])
    # BH: .02*4/1=.08, .02*4/2=.04, .6*4/3=.8, .9 -> min from top: .04, .04, .8, .9
    np.testing.assert_allclose(benjamini_hochberg(r), [0.04, 0.04, 0.9, 0.8])


def test_multiple_testing_properties_and_errors() -> None:
    p = np.random.default_rng(7).uniform(size=50)
    for f in (holm, benjamini_hochberg):
        adj = f(p)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= -1e-15) and np.all(adj >= p) and np.all(adj <= 1)
    assert np.all(benjamini_hochberg(p) <= holm(p) + 1e-15)
    for bad in ([], [0.1, np.nan], [1.2]):
        with pytest.raises(ValueError):
            holm(bad)
