"""The headline drift figure and the projection small multiples, on synthetic runs."""

from __future__ import annotations

import numpy as np

from nnsight_inoc.report import figures_drift as FD
from tests.report._figs import capture, legend_clear_of_axes, legend_texts

CONDS = ["explicit", "neutral", "zero_v", "inoc", "lossmatch", "frame_quirk", "flip_v"]


def _rows(panel: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for c in CONDS:
        base = 0.9 if c in ("neutral", "lossmatch", "flip_v") else 0.05
        for s in range(3):
            r = {"condition": c, "seed": s, "drift_score": base + 0.05 * rng.normal()}
            if panel:
                r["drift_panel_score"] = base / 2 + 0.01 * s
            out.append(r)
    return out


def test_headline_without_contrasts_draws_every_seed_and_the_verdict_intervals(tmp_path, monkeypatch) -> None:
    cap = capture(monkeypatch, FD)
    rows = _rows()
    drawn = FD.headline_drift(tmp_path / "h.png", rows)
    assert (tmp_path / "h.png").stat().st_size > 1000
    assert drawn["n_dots"] == len(rows)
    assert drawn["conditions"][:4] == ["neutral", "inoc", "zero_v", "flip_v"]
    assert drawn["contrasts"] == ["inoc-neutral", "inoc-lossmatch", "zero_v-inoc", "flip_v-inoc"]
    fig = cap.figs[0]
    assert set(CONDS) <= set(legend_texts(fig))
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == drawn["conditions"]
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections if hasattr(c, "get_offsets")) >= len(rows)
    assert legend_clear_of_axes(fig)


def test_headline_uses_the_summary_contrasts_and_clips_to_the_score_range(tmp_path, monkeypatch) -> None:
    capture(monkeypatch, FD)
    con = {"inoc-neutral": {"mean": -0.84, "lo": -1.002, "hi": -0.679, "n_seeds": 3, "p_sign_flip": 0.25}}
    drawn = FD.headline_drift(tmp_path / "h.png", _rows(panel=True), con)
    assert drawn["contrasts"] == ["inoc-neutral"] and drawn["clipped"] == ["inoc-neutral"]
    assert FD.main_drift_key(_rows(panel=True)) == "drift_panel_score"
    assert FD.main_drift_key(_rows()) == "drift_score"


def test_projection_panels_one_per_condition(tmp_path, monkeypatch) -> None:
    cap = capture(monkeypatch, FD)
    by = {c: np.random.default_rng(1).normal(size=(3, 6)) for c in CONDS}
    drawn = FD.projection_shift_panels(tmp_path / "p.png", by, layer=4)
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert drawn["seed_lines"] == 3 * len(CONDS)
    titles = [ax.get_title() for ax in cap.figs[0].axes if ax.get_visible()]
    assert len(titles) == len(CONDS) and all(any(t.startswith(c + " ") for t in titles) for c in CONDS)


def test_headline_reads_the_finetune_summarys_contrasts_block(tmp_path, monkeypatch) -> None:
    """Issue 27: the summary's block is {"measure", ..., "pairs": {"a-b": {estimate, lo, hi, ...}}}; the headline
    used to read it as {"a-b": {mean, ...}} and dropped every contrast (no right panel)."""
    from nnsight_inoc.report.contrast_rules import contrasts

    capture(monkeypatch, FD)
    rows = _rows()
    blk = contrasts(rows, "drift_score")
    drawn = FD.headline_drift(tmp_path / "h.png", rows, blk)
    assert "inoc-neutral" in drawn["contrasts"] and "zero_v-neutral" in drawn["contrasts"]
    assert set(drawn["contrasts"]) == {k for k, b in blk["pairs"].items() if b["estimate"] is not None}
