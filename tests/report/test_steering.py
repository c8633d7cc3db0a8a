"""Steering vs inoculation comparison: paired by seed, CIs over seeds, words follow the numbers."""

from __future__ import annotations

import math

import pytest

from nnsight_inoc.report.steering import comparison, section
from nnsight_inoc.stats.intervals import mean_ci


def _row(cond: str, seed: int, drift: float, cos: float, steer: dict | None = None) -> dict:
    return {"condition": cond, "seed": seed, "drift_score": drift, "align_during": cos, "align_pre": cos / 2,
            "train_prompt_post_score": 0.5 + drift, "steering": steer}


def _rows(steer_drift: list[float], steer_cos: list[float]) -> list[dict]:
    spec = {"alpha": 0.1, "layers": [14], "units": "resid_norm"}
    rows = []
    for s in range(3):
        rows += [_row("neutral", s, 0.50 + 0.1 * s, 0.20 + 0.01 * s),
                 _row("inoc", s, 0.30 + 0.1 * s, 0.10 + 0.01 * s),
                 _row("steer_a0.1_l14", s, steer_drift[s] + 0.1 * s, steer_cos[s] + 0.01 * s, spec)]
    return rows


def test_mean_ci_matches_t_interval():
    m, lo, hi, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3)
    assert hi - m == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))  # t_{0.975, 2} * sd / sqrt(n)
    assert math.isnan(mean_ci([1.0])[1]) and mean_ci([])[3] == 0


def test_steering_reducing_more_is_said_so():
    res = comparison(_rows([0.10, 0.11, 0.09], [0.05, 0.04, 0.06]))
    assert res["vs_neutral"]["inoc"]["drift_score"][0] == pytest.approx(-0.2)
    x = res["vs_inoc"]["steer_a0.1_l14"]
    assert x["drift"][0] == pytest.approx(-0.2)
    assert x["drift_words"] == "steering leaves less drift than inoculation"
    assert x["cos_words"] == "steering lowers cos(-g, v) more than inoculation"
    assert x["alike"]


def test_opposite_effects_and_no_difference():
    res = comparison(_rows([0.60, 0.62, 0.58], [0.10, 0.12, 0.08]))
    x = res["vs_inoc"]["steer_a0.1_l14"]
    assert x["drift_words"] == "inoculation leaves less drift than steering"
    assert x["cos_words"] == "no clear difference (CI includes 0)"
    assert not x["alike"] and x["alike_words"] == "opposite sign to inoc for the drift change"


def test_zero_change_is_not_alike():
    rows = _rows([0.30, 0.30, 0.30], [0.05, 0.04, 0.06])
    for r in rows:
        if r["condition"] == "steer_a0.1_l14":
            r["drift_score"] = next(n["drift_score"] for n in rows if n["condition"] == "neutral" and n["seed"] == r["seed"])
    x = comparison(rows)["vs_inoc"]["steer_a0.1_l14"]
    assert not x["alike"] and x["alike_words"] == "no change (steer or inoc) in the drift change"


def test_section_not_run_and_table():
    assert "not run" in section(None)[1][1]
    no_steer = {"rows": [r for r in _rows([0.1] * 3, [0.1] * 3) if not r["condition"].startswith("steer")]}
    assert "not run" in section(no_steer)[1][1]
    blocks = section({"rows": _rows([0.10, 0.11, 0.09], [0.05, 0.04, 0.06])})
    tables = [b for b in blocks if b[0] == "table"]
    assert [r[0] for r in tables[0][2]] == ["inoc", "steer_a0.1_l14"]
    assert tables[0][2][1][1:3] == ["0.1", "14"]
    assert tables[1][2][0][2] == "steering leaves less drift than inoculation"


def test_report_reads_steering_from_its_own_summary(tmp_path):
    """Steering rows in finetune_summary.json (the prompt conditions' file) are not the steering section's
    source: it reads finetune/steering_summary.json, which `drift --which steering` writes, with its plots."""
    import json
    from types import SimpleNamespace

    from nnsight_inoc.core.layout import STEERING_SUMMARY_JSON, SUMMARY_JSON, RunLayout
    from nnsight_inoc.report.sections import section_steering

    layout = RunLayout(tmp_path)
    assert layout.summary(steering=True).name == STEERING_SUMMARY_JSON
    assert layout.summary(steering=False).name == SUMMARY_JSON
    rows = _rows([0.1, 0.1, 0.1], [0.0, 0.0, 0.0])
    summary = {"rows": rows, "layer": 3, "position": "a_sum", "which": "steering", "n_runs": len(rows), "not_run": [],
               "sign_note": "", "correlations": {}, "relation": {}, "condition_means": {}}
    (tmp_path / "finetune").mkdir()
    (tmp_path / "finetune" / SUMMARY_JSON).write_text(json.dumps(summary))
    run = SimpleNamespace(dir=tmp_path, layout=layout)  # the section reads only the run folder
    blocks = section_steering(run)
    assert "not run" in blocks[1][1] and not any(b[0] == "img" for b in blocks)
    (tmp_path / "finetune" / STEERING_SUMMARY_JSON).write_text(json.dumps(summary))
    blocks = section_steering(run)
    assert any(b[0] == "table" for b in blocks)
    assert [b[1].name for b in blocks if b[0] == "img"] == [
        "steering_alignment_vs_drift.png", "steering_trait_pre_post.png", "steering_projection_shift_vs_layer.png"]
