"""Rich progress bars with ETA for every long loop, silenced in tests and CI logs on request."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@contextlib.contextmanager
def task(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a bar with ETA unless NNSIGHT_INOC_QUIET=1."""
    if os.environ.get("NNSIGHT_INOC_QUIET") == "1":
        yield lambda n=1: None
        return
    if not console.is_terminal:  # a log file: rich would only draw the bar at the end
        t0 = time.time()
        console.print(f"{description}: {total} items ...")
        yield lambda n=1: None
        console.print(f"{description}: done in {time.time() - t0:.0f} s")
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as prog:
        tid = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(tid, n)


def log(msg: str) -> None:
    console.print(msg)
