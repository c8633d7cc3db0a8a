"""experiments/writeup.py: the write-up's numbers are the published JSON's, and its answer is the rules' own.

Run on the published ALL-CAPS folder (real numbers, no model needed) and on a folder that holds nothing yet.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from click.testing import CliRunner

from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location("writeup", ROOT / "experiments" / "writeup.py")
writeup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writeup)
PUBLISHED = ROOT / "results" / "allcaps"


def test_numbers_come_from_the_json_and_the_answer_from_the_rules(tmp_path: Path) -> None:
    from nnsight_inoc.report.answer import answer
    from nnsight_inoc.report.claims import all_verdicts
    from nnsight_inoc.report.load import load_run

    out = tmp_path / "WRITEUP.md"
    res = CliRunner().invoke(writeup.main, ["--study", str(PUBLISHED), "--earlier", str(ROOT / "results" /
                                            "cross_trait.json"), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    text = out.read_text()
    ex = json.loads((PUBLISHED / "extract" / "extract_summary.json").read_text())
    layer = ex["layer"]
    assert f"AUROC {ex['heldout_auroc']['final_prompt'][layer]:.4f}" in text
    al = json.loads((PUBLISHED / "align" / "align_summary.json").read_text())
    blk = al["contrasts"]["inoc-neutral"]["a_sum"]
    j = al["layer"]
    assert f"inoc-neutral: {blk['diff_cos'][j]:+.4f} [{blk['lo'][j]:+.4f}, {blk['hi'][j]:+.4f}]" in text
    summ = json.loads((PUBLISHED / "finetune" / "finetune_summary.json").read_text())
    inoc = [r["drift_score"] for r in summ["rows"] if r["condition"] == "inoc"]
    row = next(line for line in text.splitlines() if line.startswith("| inoc |"))
    assert row.endswith(f"| {sum(inoc) / len(inoc):+.3f} |")
    run = load_run(PUBLISHED)
    ans = answer({c: v for c, _, v in all_verdicts(run.dir, run.extract, run.align, run.example)})
    assert f"**Answer (pre-registered rules): {ans.label}.** {ans.reason}" in text
    assert re.search(r"\*\*Answers so far:\*\* allcaps: (supported|not supported|inconclusive)\.", text)
    for section in ("## 1. Hypothesis", "## 2-4.", "## 5. Discussion"):
        assert section in text


def test_a_folder_without_results_is_said_to_be_not_run(tmp_path: Path) -> None:
    out = tmp_path / "W.md"
    empty = tmp_path / "decisive_spanish"
    empty.mkdir()
    res = CliRunner().invoke(writeup.main, ["--study", str(empty), "--earlier", str(tmp_path / "none.json"),
                                            "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "Not run yet" in text and "decisive_spanish: not run" in text and "**Interim:**" in text
