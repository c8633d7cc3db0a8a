"""What the CLI tests share: invoking a command, its one error line, and a guard that no model is loaded."""

from __future__ import annotations

from click.testing import CliRunner, Result

from nnsight_inoc.cli import main


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(res: Result) -> str:
    """The one error line; fails if there is more than one or a traceback."""
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]

