"""The report on a run with the issue-16 inputs (panel, loss split, transfer; tests/_synthetic_run.py) and with
a content-leak control in the align summary: every new section appears and the rules read the new keys."""

from __future__ import annotations

import json
import re

import pytest

from nnsight_inoc.report.sections import write_report
from nnsight_inoc.stages.drift_summary import summarise_runs
from tests import _synthetic_run as S


def _verdict(md: str, cid: str) -> str:
    m = re.search(rf"^- \*\*{cid}\*\* .+$", md, re.M)
    assert m, cid
    return m.group(0)


def _add_leak(layout) -> None:
    """A leak_inoc control in the align summary: matched to inoc within 4% of its loss gap."""
    path = layout.align_summary
    a = json.loads(path.read_text())
    full = a["contrasts"]["inoc-neutral"]["loss"]["diff"]
    blk = json.loads(json.dumps(a["contrasts"]["inoc-lossmatch"]))
    blk["loss"] = {"diff": 0.04 * full, "lo": 0.05 * full, "hi": 0.03 * full, "p": 0.2}
    a["contrasts"]["inoc-leak_inoc"] = blk
    a["conditions"]["leak_inoc"] = {**a["conditions"]["lossmatch"], "system_prompt": "You are a helpful assistant. 'A'",
                                    "per_example_prompts": {"n": 993, "n_distinct": 990, "template": None},
                                    "leak": {"target": "inoc", "dial": 10, "unit": "words"}}
    red = -full
    a["leak_match"] = {"leak_inoc": {"target": "inoc", "dial": {"k": 10, "unit": "words"},
                                     "reduction": {"mean": 0.96 * red, "lo": 0.9 * red, "hi": red},
                                     "target_reduction": {"mean": red, "lo": 0.95 * red, "hi": 1.05 * red},
                                     "gap_share": {"mean": -0.04, "lo": -0.09, "hi": 0.01},
                                     "tolerance": 0.1, "matched": True}}
    path.write_text(json.dumps(a))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    layout = S.build(tmp_path_factory.mktemp("rep") / "allcaps")
    summarise_runs(layout, S.conditions(), S.SEEDS, 27, "main", n_boot=200, seed=0)
    _add_leak(layout)
    md, htm = write_report(layout.root)
    # Issue 27: the report leads with the answer; every layer, condition and control moved to the appendix.
    return (md.read_text() + layout.report_appendix_md.read_text(),
            htm.read_text() + layout.report_appendix_html.read_text())


def test_panel_drift_decides_c5_and_c6(report):
    """Issue 22: C5 reads each run's panel mean paired by seed (t-interval over seeds), not the crossed bootstrap."""
    md, _ = report
    assert "### Drift under a panel of test prompts" in md and S.PANEL[0] in md
    c5 = _verdict(md, "C5")
    assert "mean over the panel's test prompts within each run" in c5 and "crossed" not in c5
    assert "t-interval over seeds" in c5 and "sign-flip p 0.250" in c5
    table = md.split("### Paired drift contrasts at the unit of replication")[1].split("\n#")[0]
    assert "| inoc-neutral |" in table and "| explicit-neutral |" in table
    assert "align_pre~drift_panel_score" in _verdict(md, "C6")


def test_c7_controls_for_both_loss_parts(report):
    md, _ = report
    assert "align_pre~drift_panel_score|loss_split" in _verdict(md, "C7")
    assert "Collinearity (issue 16 acceptance" in md


def test_transfer_section(report):
    md, _ = report
    section = md.split("### Cross-context transfer")[1].split("\n#")[0]
    assert "Spearman" in section and "transfer - alignment" in section and "Answer:" in section


def test_leak_control_is_the_loss_match(report):
    md, _ = report
    assert "The loss-matched comparison (C2, C8) uses: leak_inoc" in md
    leak = md.split("### Content-leak control: the match achieved")[1].split("\n#")[0]
    assert "leak_inoc" in leak and "matched" in leak and "per-example (993 prompts" in leak
    c2 = _verdict(md, "C2")
    assert "inoc-leak_inoc" in c2 and "loss match incomplete" not in c2  # 4% of the gap: a complete match
    assert "no leak_inoc runs" in _verdict(md, "C8")


def test_monitoring_within_and_control_c_and_answer(report):
    md, htm = report
    assert "Monitoring r within system prompts" in md and "bootstrap over 6 prompts" in md
    assert "### Control C per example" in md and "computed by the report from align/rows.csv.gz" in md
    assert "Not measured in this run (the align conditions have no content_loss" in md
    answer = _verdict(md, "Answer")
    assert "**inconclusive**" in answer and "What fell short" in answer
    assert "zero_v, zero_rand runs: not run (C9)" in answer  # the published sweep has no causal arms
    for cid in ("C9", "C10", "C11"):
        assert "not run" in _verdict(md, cid)
    assert "projection_vs_score_drift.png" in md and "data:image/png;base64," in htm
