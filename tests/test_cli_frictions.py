"""Small frictions a newcomer hit (issue 27): `models list` in a narrow terminal, `--debug` after the command, and
a Python without the packages."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from nnsight_inoc.cli import main
from nnsight_inoc.cli.listing import render_rows, table_width
from nnsight_inoc.models.load import list_presets
from tests._paths import ROOT
from tests._runs import tiny_run


def test_models_list_never_cuts_a_name_at_40_columns(monkeypatch, tmp_path):
    """On a 40-column terminal the table would cut every cell ('qw…'); each preset is a record instead."""
    import rich.console

    monkeypatch.setenv("NNSIGHT_INOC_HOME", str(tmp_path / "a-long-cache-folder"))
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    res = CliRunner().invoke(main, ["models", "list"])
    assert res.exit_code == 0, res.output
    for row in list_presets():
        assert f"name      {row['name']}" in res.stdout and row["path"] in res.stdout
    assert "…" not in res.stdout


@pytest.mark.parametrize("width", [40, 80, None])
def test_render_rows_keeps_every_value_whole(width):
    rows = [{"name": "qwen2.5-coder-1.5b-instruct", "path": "/a/very/long/path/" * 4}, {"name": "x", "path": "/p"}]
    text = render_rows(rows, width)
    assert all(str(v) in text for r in rows for v in r.values()) and "…" not in text
    assert ("┃" in text) == (width is None or table_width(rows) <= width)  # a table only when it fits


def test_debug_is_accepted_after_the_command(tmp_path, monkeypatch):
    _, run = tiny_run(tmp_path)

    def boom(study):
        raise RuntimeError("boom")
    monkeypatch.setattr("nnsight_inoc.stages.extract.run_extract", boom)
    for args in (["extract", "--debug", "--run-dir", str(run)], ["--debug", "extract", "--run-dir", str(run)]):
        res = CliRunner().invoke(main, args)
        assert isinstance(res.exception, RuntimeError) and "Error:" not in res.output, args  # the traceback's path
    res = CliRunner().invoke(main, ["extract", "--run-dir", str(run)])
    assert res.exit_code == 1 and "--debug" in res.stderr  # without it: one line that names it


def test_a_python_without_the_packages_gets_one_line():
    """`python -S` sees no site-packages: a plain Python outside the venv."""
    done = subprocess.run([sys.executable, "-S", "cli.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "./setup.sh" in lines[0] and "click" in lines[0] and "Traceback" not in done.stderr


def test_missing_names_what_is_absent():
    from nnsight_inoc.core.deps import REQUIRED, missing, missing_message

    assert missing() == []  # this venv has them all
    assert missing(["json", "no_such_package_xyz"]) == ["no_such_package_xyz"]
    assert "scikit-learn" in missing_message(["sklearn"]) and set(REQUIRED) >= {"torch", "nnsight", "click"}
