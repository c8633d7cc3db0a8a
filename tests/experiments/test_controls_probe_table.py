"""The collinearity the published text quotes for results/allcaps_controls, recomputed from its committed JSON
with the package's own measure (stats.relation.collinearity)."""

from __future__ import annotations

import importlib.util
import json

from tests._paths import ROOT


def _table_module():
    spec = importlib.util.spec_from_file_location("cpt", ROOT / "experiments" / "controls_probe_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_published_collinearity_is_the_package_measure_and_fails_the_acceptance() -> None:
    probe = json.loads((ROOT / "results" / "allcaps_controls" / "controls_probe_allcaps.json").read_text())
    col = _table_module().design_collinearity(probe)
    assert col["n_prompts"] == 22
    assert round(col["multiple_r_loss_split"], 3) == 0.966 and round(col["max_abs_r"], 3) == 0.966
    assert round(col["r_loss_reduction"], 3) == -0.207
    assert col["meets_acceptance"] is False and col["max_abs_r"] > col["cap_abs_r"]
    # the texts quote these numbers
    for readme in (ROOT / "README.md", ROOT / "results" / "allcaps_controls" / "README.md"):
        text = readme.read_text()
        assert "0.966" in text and "−0.21" in text, readme
