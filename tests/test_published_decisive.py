"""The numbers README.md and results/decisive_allcaps/README.md quote from the decisive sweep's first slice are the
published JSON's (hand-written text, checked here so it cannot drift from the files)."""

from __future__ import annotations

import json

from tests._paths import ROOT

FOLDER = ROOT / "results" / "decisive_allcaps"


def _panel(cond: str) -> float:
    rows = json.loads((FOLDER / "finetune" / "finetune_summary.json").read_text())["rows"]
    (row,) = [r for r in rows if r["condition"] == cond and r["seed"] == 0]
    return float(row["drift_panel_score"])


def test_readmes_quote_the_published_drift_and_alignment():
    readme, folder_readme = (ROOT / "README.md").read_text(), (FOLDER / "README.md").read_text()
    assert f"left drift at +{_panel('zero_v'):.2f} against neutral's +{_panel('neutral'):.2f} and inoculation's " \
           f"+{_panel('inoc'):.2f}" in readme
    assert f"changed nothing (+{_panel('zero_rand'):.2f})" in readme
    for cond in ("neutral", "inoc", "explicit", "lossmatch", "zero_v", "zero_rand"):
        assert f"| {cond} | +{_panel(cond):.3f} (" in folder_readme
    al = json.loads((FOLDER / "align" / "align_summary.json").read_text())
    blk = al["beyond_leak"]["contrasts"]["inoc-leak_inoc"]["b_sum"]
    layer = al["layer"]
    quoted = f"{blk['diff_cos'][layer]:.4f} [{blk['lo'][layer]:.4f}, {blk['hi'][layer]:.4f}]".replace("-", "−")
    assert quoted in readme and quoted in folder_readme
    assert al["beyond_leak"]["n_examples"] == 954 and al["beyond_leak"]["words"] == 6
