"""Cross-trait summary over the published study folders: every cell is the study's own number or verdict."""

from __future__ import annotations

import json
import shutil

import pytest

from nnsight_inoc.report import drift_rules as DR
from nnsight_inoc.report.cross_trait import study_row, write_cross_trait
from tests._paths import ROOT

RESULTS = ROOT / "results"


def test_rows_match_each_study_summary(tmp_path):
    path = write_cross_trait([RESULTS / "allcaps", RESULTS / "spanish"], tmp_path)
    md = path.read_text()
    data = json.loads((tmp_path / "cross_trait.json").read_text())
    for row in data["studies"]:
        summ = DR.drift_summary(RESULTS / row["study"])
        inoc = [r["drift_score"] for r in summ["rows"] if r["condition"] == "inoc"]
        assert row["drift"]["inoc"] == pytest.approx(sum(inoc) / len(inoc))
        assert row["drift"]["align_r"] == summ["relation"]["align_pre~drift_score"]
        assert row["verdicts"]["C5"] in ("supported", "not supported", "inconclusive")
    assert md.count("\n| ") >= 18 and "| allcaps | spanish |" in md
    assert all(line.count("|") == 4 for line in md.splitlines() if line.startswith("| "))  # no stray pipes


def test_study_without_drift_says_not_run(tmp_path):
    run = tmp_path / "allcaps"
    shutil.copytree(RESULTS / "allcaps", run, ignore=shutil.ignore_patterns("finetune"))
    row = study_row(run)
    assert row["drift"] is None and row["verdicts"]["C5"] == "inconclusive"
    assert "not run" in write_cross_trait([run], tmp_path / "out").read_text()


def test_needs_a_study(tmp_path):
    with pytest.raises(ValueError):
        write_cross_trait([], tmp_path)
