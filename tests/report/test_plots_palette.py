"""The old plots (report/plots.py) take the study's one look per condition and keep legends off the data
(issue 27): the same condition has the same colour in the align stage's plots, the drift stage's and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex

from nnsight_inoc.report import plots
from nnsight_inoc.report.figures_run import run_styles
from nnsight_inoc.report.palette import condition_styles


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plot function saves, instead of its PNG."""
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
    return saved


def _colour_of(ax, label: str) -> str:
    for line in ax.get_lines():
        if line.get_label() == label:
            return to_hex(line.get_color())
    for coll in ax.collections:
        if coll.get_label() == label:
            return to_hex(coll.get_facecolor()[0])
    raise AssertionError(f"no artist labelled {label}")


def test_a_condition_looks_the_same_whatever_else_a_plot_shows(figures):
    study = condition_styles(["neutral", "inoc", "zero_v", "explicit", "lossmatch"])
    band = (np.zeros(3), np.zeros(3) - 1, np.zeros(3) + 1)
    plots.curves_with_ci(Path("a.png"), {"explicit": band, "inoc": band}, "y", "t", styles=study)
    plots.curves_with_ci(Path("b.png"), {"inoc": band, "zero_v": band, "neutral": band}, "y", "t", styles=study)
    plots.projection_vs_score(Path("c.png"), [0.1, 0.2, 0.3], [0.1, 0.0, 0.2], ["zero_v", "inoc", "inoc"], 1, "x",
                              styles=study)
    a, b, c = (f.axes[0] for f in figures)
    want = to_hex(study["inoc"]["color"])
    assert _colour_of(a, "inoc") == _colour_of(b, "inoc") == _colour_of(c, "inoc") == want
    # Without the study's map, the position in this plot's own list would decide (what the old plots did).
    assert to_hex(plots.style(1)["color"]) != to_hex(study["explicit"]["color"])
    assert _colour_of(a, "explicit") == to_hex(study["explicit"]["color"])


def test_legends_sit_outside_the_axes(figures):
    plots.pre_post_bars(Path("p.png"), {"neutral": ([0.1, 0.2], [0.3, 0.4]), "inoc": ([0.1, 0.1], [0.2, 0.2])})
    plots.projection_hist(Path("h.png"), np.random.default_rng(0).normal(size=20),
                          np.random.default_rng(1).normal(size=20), 3, "allcaps")
    for fig in figures:
        ax = next(a for a in fig.axes if a.get_legend() is not None)
        legend = ax.get_legend()
        assert legend._loc == 6  # 'center left' of an anchor right of the axes
        assert legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted()).x0 >= 1.0
        labels = [t.get_text() for t in legend.get_texts()]
        assert len(labels) == len(legend.legend_handles)  # every entry has its line or patch


def test_align_time_and_drift_time_maps_agree(tmp_path):
    """The align stage plots before finetune exists; the drift stage after: both get the same map."""
    run = tmp_path / "run"
    (run / "align").mkdir(parents=True)
    (run / "config.toml").write_text('[intervene]\narms = ["zero_v", "restore_v"]\n')
    align_conds = ["neutral", "inoc", "explicit", "lossmatch", "leak_inoc", "inoc_para1"]
    at_align = run_styles(run, extra=align_conds)
    (run / "align" / "align_summary.json").write_text(json.dumps({"conditions": {c: {} for c in align_conds}}))
    (run / "finetune").mkdir()
    rows = [{"condition": c, "seed": 0} for c in ("neutral", "inoc", "zero_v", "restore_v", "inoc_para1")]
    (run / "finetune" / "finetune_summary.json").write_text(json.dumps({"rows": rows}))
    at_drift = run_styles(run, extra=[r["condition"] for r in rows])
    assert {c: at_align[c] for c in at_drift} == at_drift
