"""The one error kind that means "the command is wrong", so the CLI can answer it with exit code 2.

Every layer raises :class:`UsageProblem` (or a subclass) for a bad input the user chose: a
flag, a config key, a file they named, a run folder they pointed at. The CLI prints its
message as one line and exits 2 (the POSIX convention for usage errors, as Click does);
any other failure exits 1. Raise it before expensive work, and name the bad value and what
is allowed in the message.
"""

from __future__ import annotations


class UsageProblem(ValueError):
    """The command or one of its inputs is wrong; the message names the bad value and what is allowed."""
