"""One lock per run folder, so that two commands never do the same work in it at once.

``flock(2)`` on ``<run>/.lock/lock``: the kernel drops the lock when its process exits or dies, so
there is never a stale lock to remove by hand. A stage command holds it exclusively for the
whole command; finetune workers (``finetune --worker`` and the ``--executor workers`` launcher), which share
a folder's runs through claims (``stages/workers.py``), hold it shared, so they run together but
never beside another stage command. Each holder leaves ``.lock/<host>.<pid>.json`` (its command
and start time) so that a refused command can name the holder's PID.

Limits: flock on a network file system (NFS) is emulated and may not exclude processes on
other hosts; keep run folders on a local disk when several hosts share them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nnsight_inoc.core.layout import RunLayout


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock; the message names its PID and command."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def holders(run_dir: Path) -> list[dict[str, Any]]:
    """The recorded holders of a run folder's lock that may still be alive (this host: pid checked)."""
    layout = RunLayout(run_dir)
    out = []
    for f in sorted(layout.lock_dir.glob("*.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # being written or removed right now
        if rec.get("host") != socket.gethostname() or pid_alive(int(rec.get("pid", -1))):
            out.append(rec)
    return out


def _busy_message(run_dir: Path) -> str:
    recs = holders(run_dir)
    if not recs:
        who = "another process (it has not recorded its pid yet)"
    else:
        who = ", ".join(f"pid {r['pid']} on {r['host']} (`{r['command']}`, since {r['since']})" for r in recs)
    return f"run folder {run_dir} is in use by {who}; wait for it to finish, or use another --run-dir"


def _clear_dead(layout: RunLayout) -> None:
    """Remove holder records of processes on this host that are gone (killed before they could clean up)."""
    host = socket.gethostname()
    for f in layout.lock_dir.glob(f"{host}.*.json"):
        pid = f.name[len(host) + 1 : -len(".json")]
        if pid.isdigit() and not pid_alive(int(pid)):
            f.unlink(missing_ok=True)


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, command: str, *, shared: bool = False) -> Iterator[None]:
    """Hold the run folder's lock for the body (shared: with other shared holders only).

    Creates the run folder when missing (call it after the command's inputs are validated).
    Raises :class:`RunFolderBusy` at once, without waiting, when another process holds it.
    """
    layout = RunLayout(run_dir)
    layout.lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(_busy_message(run_dir)) from None
        _clear_dead(layout)
        me = layout.lock_holder(socket.gethostname(), os.getpid())
        rec = {"host": socket.gethostname(), "pid": os.getpid(), "command": command, "shared": shared,
               "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = me.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, me)  # a reader never sees half a record
        try:
            yield
        finally:
            me.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the flock
