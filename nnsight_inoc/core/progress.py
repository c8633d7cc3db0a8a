"""Progress a person can plan by: bars that move per batch and show an ETA from the first batch on.

One rich live display per process. :func:`task` opens a bar; a task opened inside another is a
bar in the same display (a sweep's bar, then its current run's bar, then that run's probe bar),
so a LoRA sweep shows one overall bar and one bar for the run in progress instead of a line per
step. A nested bar disappears when it finishes; at depth 1 (a run of a sweep) it leaves one line
saying how it ended. The ETA is the elapsed time per finished item times the items left, so it
appears after the first batch. (rich's own ETA column averages over the last 30 s only and stays
at ``-:--:--`` while one batch takes longer than that, which made a 4-minute bar look stuck.)

When stderr is not a terminal (a log file), bars at depth 0 and 1 print a status line every
``NNSIGHT_INOC_PROGRESS_EVERY`` seconds (default 30) and one when they end; deeper ones print
nothing. ``NNSIGHT_INOC_QUIET=1`` silences every bar.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text


def make_console() -> Console:
    """stderr's console: on a terminal, rich's own; in a log file (not a terminal) one that never wraps a message
    at 80 columns (rich's width off a terminal), so a log line stays one line that grep finds whole."""
    c = Console(stderr=True)
    return c if c.is_terminal else Console(stderr=True, soft_wrap=True)


console = make_console()
_live: Progress | None = None  # the display every open bar of this process lives in
_depth = 0  # bars open right now


def hms(seconds: float) -> str:
    """0:01:05 style, like rich's own time columns."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def eta_seconds(elapsed: float | None, done: float, total: float | None) -> float | None:
    """Seconds left at the average pace so far; None before the first item or without a total."""
    if not done or total is None or elapsed is None:
        return None
    return max(0.0, elapsed / done * (total - done))


class EtaColumn(ProgressColumn):
    """``eta 0:03:10`` from the first finished item on (elapsed / done * left)."""

    def render(self, task: Task) -> Text:
        left = eta_seconds(task.elapsed, task.completed, task.total)
        return Text("eta " + ("-:--:--" if left is None else hms(left)), style="progress.remaining")


class Bar:
    """What :func:`task` yields: call it to advance by n items; :meth:`note` shows a short status (the loss)."""

    def __init__(self, advance: Callable[[int], None], note: Callable[[str], None]) -> None:
        self._advance, self._note = advance, note

    def __call__(self, n: int = 1) -> None:
        self._advance(n)

    def note(self, text: str) -> None:
        self._note(text)


def _period() -> float:
    return float(os.environ.get("NNSIGHT_INOC_PROGRESS_EVERY", "30"))


def _status(description: str, done: int, total: int, elapsed: float, note: str) -> str:
    left = eta_seconds(elapsed, done, total)
    pct = f" ({100 * done / total:.0f}%)" if total else ""
    eta = "" if left is None or done >= total else f", eta {hms(left)}"
    return f"{description}: {done}/{total}{pct}, {hms(elapsed)} elapsed{eta}" + (f"; {note}" if note else "")


@contextlib.contextmanager
def _logged(description: str, total: int, depth: int) -> Iterator[Bar]:
    """Bars for a log file: lines at a fixed period, not a redrawn bar."""
    loud = depth <= 1
    t0 = last = time.monotonic()
    state = {"done": 0, "note": ""}
    if depth == 0:
        console.print(f"{description}: {total} items ...", markup=False, highlight=False)

    def advance(n: int = 1) -> None:
        nonlocal last
        state["done"] += n
        now = time.monotonic()
        if loud and now - last >= _period() and state["done"] < total:
            last = now
            console.print(_status(description, state["done"], total, now - t0, state["note"]), markup=False,
                          highlight=False)

    def note(text: str) -> None:
        state["note"] = text

    yield Bar(advance, note)
    if loud:
        line = f"{description}: {state['done']}/{total} done in {hms(time.monotonic() - t0)}"
        console.print(line + (f"; {state['note']}" if state["note"] else ""), markup=False, highlight=False)


def _new_display() -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False, style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        EtaColumn(),
        TextColumn("{task.fields[note]}", markup=False),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def task(description: str, total: int) -> Iterator[Bar]:
    """A bar of ``total`` items for the body; yields a :class:`Bar` (``bar(n)`` advances, ``bar.note(text)``)."""
    global _live, _depth
    if os.environ.get("NNSIGHT_INOC_QUIET") == "1":
        yield Bar(lambda n=1: None, lambda text: None)
        return
    depth = _depth
    _depth += 1
    try:
        if not console.is_terminal:  # a log file: rich would only draw the bar at the end
            with _logged(description, total, depth) as bar:
                yield bar
            return
        owner = _live is None
        if owner:
            _live = _new_display()
            _live.start()
        live = _live
        tid = live.add_task(description, total=total, note="")
        try:
            yield Bar(lambda n=1: live.advance(tid, n), lambda text: live.update(tid, note=text))
        finally:
            if owner:
                live.stop()
                _live = None
            else:
                t = live.tasks[[x.id for x in live.tasks].index(tid)]
                live.remove_task(tid)  # the next run's bar takes its place
                if depth == 1:
                    line = f"{description}: {int(t.completed)}/{total} done in {hms(t.elapsed or 0.0)}"
                    live.console.print(line + (f"; {t.fields['note']}" if t.fields["note"] else ""), markup=False,
                                       highlight=False)
    finally:
        _depth -= 1


def log(msg: str) -> None:
    console.print(msg)
