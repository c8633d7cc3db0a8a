"""Is a run folder writable? Checked before any work, so a read-only folder fails in a second with one line.

Without it, a read-only run folder failed with an ``OSError`` traceback at the first write,
after the model had loaded. ``os.access`` is not enough (root passes it on a read-only mount
or an immutable folder), so the check creates and removes a file where the command will write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nnsight_inoc.core.errors import UsageProblem


class NotWritable(UsageProblem):
    """The run folder (or the folder it would be created in) cannot be written."""


def check_writable(folder: Path) -> None:
    """Refuse a folder this process cannot write into; a missing folder is checked at its nearest existing parent.

    Creates nothing that stays: one temporary file, removed at once. Raises :class:`NotWritable`.
    """
    folder = Path(folder)
    target = folder
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    if not target.is_dir():
        raise NotWritable(f"run folder {folder}: {target} is a file, not a folder; choose another --run-dir")
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=target)
    except OSError as err:
        where = "" if target == folder else f" (it would be created in {target})"
        raise NotWritable(f"run folder {folder} is not writable{where}: {err.strerror or err}; choose another "
                          "--run-dir or make it writable") from None
    os.close(fd)
    os.unlink(name)
