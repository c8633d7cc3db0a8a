"""The package's progress bars sent to a string, as a test reads them."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from nnsight_inoc.core import progress as P


def capture_bars(monkeypatch: pytest.MonkeyPatch, *, terminal: bool) -> io.StringIO:
    """Bars drawn as on a terminal (``terminal``: one live display, 120 columns) or printed as in a log file
    (status lines, 200 columns), into the returned buffer; NNSIGHT_INOC_QUIET (set by CI) is lifted."""
    out = io.StringIO()
    monkeypatch.setattr(P, "console", Console(file=out, force_terminal=terminal, width=120 if terminal else 200))
    monkeypatch.delenv("NNSIGHT_INOC_QUIET", raising=False)
    return out
