"""How the CLI reports a failure: one line on stderr, exit code 2 for usage errors and 1 otherwise.

Why here and not in each command: a traceback (45 to 57 lines for ``--device tpu`` or ``--device
cuda`` without CUDA) hides the one fact a user needs, so every command goes through
:func:`handle_errors`. ``--debug`` (or ``NNSIGHT_INOC_DEBUG=1``) lets the original exception
through with its traceback. Usage errors are :class:`~nnsight_inoc.core.errors.UsageProblem`
(bad flags, config keys, files the user named, run folders) and Click's own usage errors.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import click

from nnsight_inoc.core.errors import UsageProblem

USAGE_EXIT = 2  # POSIX and Click's convention for a wrong command line
FAILURE_EXIT = 1


class CliError(click.ClickException):
    """A one-line error with its own exit code (Click prints ``Error: <message>``)."""

    def __init__(self, message: str, exit_code: int = FAILURE_EXIT) -> None:
        super().__init__(one_line(message))
        self.exit_code = exit_code


def one_line(message: str) -> str:
    """A multi-line message (a config error listing keys) joined into one line."""
    parts = [p.strip() for p in message.splitlines() if p.strip()]
    out = ""
    for p in parts:
        out += p if not out else (" " if out.endswith(":") else "; ") + p
    return out


def debug_requested() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.params.get("debug")) or os.environ.get("NNSIGHT_INOC_DEBUG") == "1"


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures with a message meant for users (exit 1, no 'unexpected')."""
    from nnsight_inoc.core.lock import RunFolderBusy
    from nnsight_inoc.data.splits import DataError
    from nnsight_inoc.models.errors import ModelError
    from nnsight_inoc.trace.chat import ChatFormatError
    from nnsight_inoc.trace.loss import NonFiniteError
    from nnsight_inoc.trace.tracing import TracingError

    try:
        from nnsight.intervention.backends.remote import RemoteError
    except ImportError:  # pragma: no cover - nnsight layout changed
        RemoteError = ConnectionError  # noqa: N806
    return (ModelError, DataError, ChatFormatError, TracingError, NonFiniteError, RunFolderBusy, RemoteError,
            ConnectionError, FileNotFoundError, NotImplementedError, ValueError)


def as_cli_error(err: Exception) -> CliError:
    """The one-line error and exit code for an exception a command raised."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, UsageProblem):
        return CliError(text, USAGE_EXIT)
    if isinstance(err, _expected_errors()):
        if isinstance(err, ConnectionError) or type(err).__name__ == "RemoteError":
            from nnsight import CONFIG

            text = f"{type(err).__name__} from the NDIF server {CONFIG.API.HOST}: {err}"
        return CliError(text, FAILURE_EXIT)
    return CliError(f"unexpected {text} (`cli.py --debug ...` shows the traceback)", FAILURE_EXIT)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every failure becomes one clear line and an exit code, not a traceback (unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        try:
            return fn(*a, **k)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as err:
            if debug_requested():
                raise
            raise as_cli_error(err) from None

    return wrapper
