"""The models layer's one error type."""

from __future__ import annotations


class ModelError(RuntimeError):
    """A model could not be fetched, verified, converted or loaded; the message says why."""
