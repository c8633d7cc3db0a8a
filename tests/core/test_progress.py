"""Bars a person can plan by: an ETA from the first batch on, one live display for nested bars (a sweep, its
run, the run's probe), one line per finished run, periodic lines in a log file."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress, TimeRemainingColumn

from nnsight_inoc.core import progress as P
from tests._progress import capture_bars


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_shows_after_the_first_batch_even_when_a_batch_takes_minutes():
    """rich's own column averages over the last 30 s, so one batch of 4 minutes never gives it an ETA."""
    clock = Clock()
    prog = Progress(get_time=clock, console=Console(file=io.StringIO()))
    tid = prog.add_task("generate: train/promote", total=300)
    clock.t = 240.0  # the first batch of 32 took 4 minutes
    prog.advance(tid, 32)
    task = prog.tasks[0]
    assert P.EtaColumn().render(task).plain == f"eta {P.hms(240 / 32 * 268)}"  # 0:33:30
    assert TimeRemainingColumn().render(task).plain == "-:--:--"  # what the bar used to show
    fresh = Progress(get_time=clock, console=Console(file=io.StringIO()))
    fresh.add_task("x", total=10)
    assert P.EtaColumn().render(fresh.tasks[0]).plain == "eta -:--:--"  # nothing to go on yet
    assert P.eta_seconds(10.0, 5, 10) == 10.0 and P.eta_seconds(10.0, 0, 10) is None


@pytest.fixture
def terminal(monkeypatch):
    return capture_bars(monkeypatch, terminal=True)


@pytest.fixture
def logfile(monkeypatch):
    return capture_bars(monkeypatch, terminal=False)


def test_nested_bars_share_one_display_and_leave_one_line_per_run(terminal):
    with P.task("finetune sweep (main)", 2) as sweep:
        for run in ("neutral_seed0", "inoc_seed0"):
            with P.task(f"finetune {run}", 3) as bar:
                for step in range(3):
                    with P.task(f"probe at step {step}", 2) as probe:  # a third level: shown while it runs only
                        probe(2)
                    bar(1)
                    bar.note(f"loss {0.5 - step / 10:.4f}")
            sweep(1)
    assert P._live is None and P._depth == 0  # the display is closed with its outermost bar
    text = terminal.getvalue()
    lines = [line for line in text.replace("\r", "\n").splitlines() if " done in " in line]
    assert [line.split(":")[0].split("\x1b[2K")[-1] for line in lines] == ["finetune neutral_seed0",
                                                                          "finetune inoc_seed0"]
    assert all(line.endswith("; loss 0.3000") for line in lines)
    assert "probe at step 0: " not in text  # deeper bars leave no line


def test_log_file_gets_periodic_lines_with_an_eta(logfile, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    monkeypatch.setenv("NNSIGHT_INOC_PROGRESS_EVERY", "30")
    with P.task("generate: train/promote", 300) as bar:
        clock.t = 40.0
        bar(32)
        clock.t = 50.0
        bar(32)  # within 30 s of the last line: no new line
        clock.t = 80.0
        bar(236)
    lines = logfile.getvalue().splitlines()
    assert lines == ["generate: train/promote: 300 items ...",
                     "generate: train/promote: 32/300 (11%), 0:00:40 elapsed, eta 0:05:35",
                     "generate: train/promote: 300/300 done in 0:01:20"]


def test_log_file_nested_bars(logfile):
    with P.task("drift sweep (main)", 1) as sweep:
        with P.task("drift inoc_seed0", 2) as run:
            with P.task("answers", 4) as deep:
                deep(4)
            run(2)
            run.note("neutral-prompt score 0.08 -> 0.15")
        sweep(1)
    lines = [line.split(" done in ")[0] for line in logfile.getvalue().splitlines()]
    assert lines == ["drift sweep (main): 1 items ...", "drift inoc_seed0: 2/2", "drift sweep (main): 1/1"]


def test_quiet_means_silent(monkeypatch, logfile):
    monkeypatch.setenv("NNSIGHT_INOC_QUIET", "1")
    with P.task("x", 2) as bar:
        bar(2)
        bar.note("y")
    assert logfile.getvalue() == ""


def test_log_file_lines_are_not_wrapped_at_80_columns():
    """Issue 27: off a terminal (a log file) a long message stays one line, whatever COLUMNS says."""
    import subprocess
    import sys

    from tests._paths import ROOT

    code = "from nnsight_inoc.core.progress import log; log('word ' * 60 + 'END')"
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "40"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].rstrip().endswith("END") and len(lines[0]) > 300, done.stderr
