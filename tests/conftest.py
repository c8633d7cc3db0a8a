"""Fixtures shared across test files (pytest finds them here without an import)."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if a command gets as far as loading a model."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the error")
    monkeypatch.setattr("nnsight_inoc.study.load_model", refuse)
