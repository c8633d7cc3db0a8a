"""The models layer's error types."""

from __future__ import annotations

from nnsight_inoc.core.errors import UsageProblem


class ModelError(RuntimeError):
    """A model could not be fetched, verified, converted or loaded; the message says why."""


class ModelInputError(ModelError, UsageProblem):
    """The model the user named cannot be used as given (a truncated .gguf, a template without a system
    role, a device this machine lacks); a usage error: the message names the file or the option to change."""
