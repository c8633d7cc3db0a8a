"""The base of every config section: unknown keys are errors (a typo in a research config quietly changes
results), and assignments are validated too."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
