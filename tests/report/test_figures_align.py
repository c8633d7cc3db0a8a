"""Alignment and loss figures on synthetic inputs: every condition shown, legends clear of the data."""

from __future__ import annotations

import numpy as np

from nnsight_inoc.report import figures_align as FA
from tests.report._figs import capture, legend_clear_of_axes, legend_texts


def test_cos_vs_layer_bands_and_legend(tmp_path, monkeypatch) -> None:
    cap = capture(monkeypatch, FA)
    x = np.linspace(0, 0.1, 6)
    curves = {"lossmatch": (x, x - 0.01, x + 0.01), "neutral": (x + 0.01, x, x + 0.02), "inoc": (x - 0.01, None, None)}
    drawn = FA.cos_vs_layer(tmp_path / "c.png", curves, 4, "a_sum", "band: 95% bootstrap CI over examples (n = 9)")
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert drawn == {"conditions": ["neutral", "inoc", "lossmatch"], "bands": 2}
    fig = cap.figs[0]
    assert set(curves) <= set(legend_texts(fig)) and "reporting layer 4" in legend_texts(fig)
    assert "cos(-g, v) > 0" in fig.axes[0].get_title() and legend_clear_of_axes(fig)


def _part(m: float) -> dict:
    return {"mean": m, "lo": m - 0.01, "hi": m + 0.01}


def test_loss_split_bars_show_every_condition_and_part(tmp_path, monkeypatch) -> None:
    cap = capture(monkeypatch, FA)
    parts = {c: {"total": _part(t), "trait": _part(t + 0.01), "content": _part(-0.01)}
             for c, t in (("explicit", 0.16), ("inoc", 0.03), ("leak_inoc", 0.03))}
    FA.loss_split_bars(tmp_path / "l.png", parts, 200)
    fig = cap.figs[0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["inoc", "leak_inoc", "explicit"]
    assert legend_texts(fig) == ["total", "trait part", "content part"]
    assert "n = 200" in fig.axes[0].get_title() and "(nats)" in fig.axes[0].get_ylabel()
    assert legend_clear_of_axes(fig)


def test_dial_marks_targets_and_matched_words(tmp_path, monkeypatch) -> None:
    cap = capture(monkeypatch, FA)
    curve = [{"words": w, "reduction": _part(0.01 * w - 0.04)} for w in (1, 2, 4, 6, 16, 17, 24)]
    targets = {"inoc": {"reduction": _part(0.03), "words": 6, "matched": True},
               "inoc_para1": {"reduction": _part(0.16), "words": 17, "matched": False}}
    drawn = FA.dial_curve(tmp_path / "d.png", curve, targets, 200, 0.1)
    ax = cap.figs[0].axes[0]
    assert drawn["n_points"] == 7 and ax.get_xscale() == "log"
    texts = legend_texts(cap.figs[0])
    assert any("matched at 6 words" in t for t in texts) and any("17 words (NOT matched)" in t for t in texts)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "16" in labels and labels[labels.index("16") + 1] == ""  # 17 is too close to 16 to label
    assert legend_clear_of_axes(cap.figs[0])


def test_dcos_vs_parts_colours_by_family(tmp_path, monkeypatch) -> None:
    cap = capture(monkeypatch, FA)
    pts = {c: {"dcos": d, "trait": t, "content": k} for c, d, t, k in (
        ("neutral", 0, 0, 0), ("inoc", -0.005, 0.04, -0.01), ("lossmatch", -0.004, 0.03, -0.01),
        ("leak_inoc", 0.016, 0.02, 0.01), ("inoc_para1", -0.05, 0.23, -0.07))}
    drawn = FA.dcos_vs_parts(tmp_path / "v.png", pts, 27, "a_sum", 200)
    assert drawn["families"] == ["leak factorial", "loss-matched", "main", "variants"]
    fig = cap.figs[0]
    assert len(fig.axes) == 2 and "trait part" in fig.axes[0].get_xlabel() and "content" in fig.axes[1].get_xlabel()
    assert sorted(t.split(" (")[0] for t in legend_texts(fig)) == drawn["families"]
    assert legend_clear_of_axes(fig)
