"""Checks before weights for every stage command (issue 27): a stage on a folder without its inputs fails before the
model loads and writes nothing; ``report`` on a folder that is not a run folder says so; exit code 2 for both."""

from __future__ import annotations

import pytest

from tests._cli import cli, error_line
from tests._runs import snapshot, tiny_run


@pytest.mark.parametrize("command, missing", [
    (["align", "--condition", "all"], "directions.pt (run `extract` first)"),
    (["transfer"], "directions.pt (run `extract` first)"),
    (["finetune"], "directions.pt (run `extract` first)"),
    (["finetune", "--executor", "ray", "--ray-local-cpus", "1"], "directions.pt (run `extract` first)"),
    (["finetune", "--gpus", "0"], "directions.pt (run `extract` first)"),
    (["drift"], "directions.pt (run `extract` first)"),
])
def test_stage_without_its_inputs_fails_before_the_model(tmp_path, no_weights, command, missing):
    _, run = tiny_run(tmp_path, directions=False)
    before = snapshot(run)
    res = cli(*command, "--run-dir", run)
    assert res.exit_code == 2, res.output
    assert missing in error_line(res) and f"`{command[0]}` on {run}" in error_line(res)
    assert snapshot(run) == before  # nothing written: no provenance, no lock folder's files
    assert not (run / "provenance.json").exists()


@pytest.mark.parametrize("flags, missing", [([], "train.json under"), (["--summary-only"], "drift.json under")])
def test_drift_without_trained_runs(tmp_path, no_weights, flags, missing):
    _, run = tiny_run(tmp_path, directions=True)
    before = snapshot(run)
    res = cli("drift", *flags, "--run-dir", run)
    assert res.exit_code == 2 and missing in error_line(res) and "(run `finetune" in error_line(res)
    assert snapshot(run) == before


def test_drift_with_a_trained_run_gets_past_the_check(tmp_path, no_weights):
    """The check can pass: with directions and a train.json the command goes on to load the model."""
    _, run = tiny_run(tmp_path, directions=True)
    (run / "finetune" / "neutral_seed0").mkdir(parents=True)
    (run / "finetune" / "neutral_seed0" / "train.json").write_text("{}")
    res = cli("drift", "--run-dir", run)
    assert isinstance(res.exception, AssertionError) or "the model was loaded" in res.output


def test_report_on_a_folder_that_is_not_a_run_folder(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff")
    res = cli("report", "--run-dir", other)
    assert res.exit_code == 2
    assert f"{other} is not a run folder" in error_line(res)
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"]
    res = cli("report", "--run-dir", tmp_path / "nosuch")
    assert res.exit_code == 2 and "does not exist" in error_line(res)


def test_report_on_a_run_folder_before_extract(tmp_path):
    _, run = tiny_run(tmp_path, directions=False)
    res = cli("report", "--run-dir", run)
    assert res.exit_code == 2
    line = error_line(res)
    assert "nothing to report yet" in line and "extract_summary.json (run `extract` first)" in line
    assert not (run / "report.md").exists()
