"""Drift verdicts under the issue-16 rules, on small synthetic summaries whose right answer is obvious."""

from __future__ import annotations

import json

from nnsight_inoc.report import drift_rules as DR
from nnsight_inoc.report.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED


def _write(run_dir, rows, relation=None, **extra):
    (run_dir / "finetune").mkdir(parents=True, exist_ok=True)
    (run_dir / "finetune" / "finetune_summary.json").write_text(json.dumps(
        {"layer": 3, "rows": rows, "correlations": {}, "relation": relation or {"collinearity": {}},
         "position": "a_sum", "which": "main", "n_runs": len(rows), "not_run": [], "sign_note": "",
         "condition_means": {}, **extra}))


def _rows(diffs: dict[str, list[float]]):
    out = [{"condition": "neutral", "seed": s, "drift_score": 0.9} for s in range(3)]
    for c, ds in diffs.items():
        out += [{"condition": c, "seed": s, "drift_score": 0.9 + d} for s, d in enumerate(ds)]
    return out


def _panel(mean, lo, hi, key="inoc-neutral"):
    return {"prompts": ["p"] * 5, "method": "crossed", "by_condition": {},
            "contrasts": {key: {"mean": mean, "lo": lo, "hi": hi, "n_rows": 3, "n_cols": 5}}}


def test_three_lower_seeds_are_not_a_test(tmp_path):
    """All three seeds lower happens 1 time in 8 by chance: the paired interval decides, not the count."""
    _write(tmp_path, _rows({"inoc": [-0.01, -0.5, -0.02]}))
    v = DR.c5_drift(tmp_path)
    assert v.label == INCONCLUSIVE and "3/3 seeds lower (reported, not a test)" in v.reason
    assert "sign-flip p 0.250" in v.reason and "the CI's upper end" in v.shortfall[0]
    _write(tmp_path, _rows({"inoc": [-0.8, -0.82, -0.85]}))
    assert DR.c5_drift(tmp_path).label == SUPPORTED


def test_per_seed_panel_means_decide_not_the_crossed_bootstrap(tmp_path):
    """Issue 22: the crossed bootstrap over panel prompts and seeds (pseudo-replication) decides nothing; C5
    reads each run's panel mean, paired by seed, with a t-interval over seeds."""
    rows = _rows({"inoc": [-0.8, -0.82, -0.85]})  # the neutral test prompt alone would say supported
    for r, panel in zip(rows, [0.9] * 3 + [0.6, 0.9, 0.7]):
        r["drift_panel_score"] = panel  # inoc - neutral per seed on the panel: -0.3, 0.0, -0.2
    _write(tmp_path, rows, panel=_panel(-0.5, -0.6, -0.4), main_drift="drift_panel_score")  # crossed: "below 0"
    v = DR.c5_drift(tmp_path)
    assert v.label == INCONCLUSIVE and "crossed" not in v.reason
    assert "mean over the panel's test prompts within each run" in v.reason and "-0.300, +0.000, -0.200" in v.reason
    assert v.shortfall[0].startswith("inoc - neutral drift: the CI's upper end")
    for r, panel in zip(rows[3:], (0.88, 0.89, 0.895)):
        r["drift_panel_score"] = panel  # consistently lower by about 0.01: inside the negligible band
    _write(tmp_path, rows, panel=_panel(-0.5, -0.6, -0.4), main_drift="drift_panel_score")
    v = DR.c5_drift(tmp_path)
    assert v.label == NOT_SUPPORTED and "negligible band" in v.reason


def test_c8_uses_the_leak_control_and_states_the_uncapped_verdict(tmp_path):
    rows = _rows({"inoc": [-0.8, -0.82, -0.85], "leak_inoc": [-0.1, -0.12, -0.11], "lossmatch": [-0.8, -0.8, -0.8]})
    _write(tmp_path, rows)
    align = {"contrasts": {"inoc-neutral": {"loss": {"diff": -0.03}}, "inoc-lossmatch": {"loss": {"diff": 0.0}},
                           "inoc-leak_inoc": {"loss": {"diff": -0.015}}}}
    v = DR.c8_drift_beyond_lossmatch(tmp_path, align)
    assert v.label == INCONCLUSIVE and "leak_inoc control leaves 50%" in v.reason
    assert "uncapped: supported" in v.reason and "inoc - leak_inoc drift" in v.reason
    assert "loss match (leak_inoc)" in v.shortfall[0]
    align["contrasts"]["inoc-leak_inoc"]["loss"]["diff"] = -0.002
    assert DR.c8_drift_beyond_lossmatch(tmp_path, align).label == SUPPORTED


def _rel(r, lo, hi, groups=16):
    return {"r": r, "lo": lo, "hi": hi, "n_runs": 3 * groups, "n_groups": groups}


def test_c7_reads_the_loss_split_and_its_collinearity(tmp_path):
    rows = _rows({"inoc": [-0.8, -0.82, -0.85]})
    col = {"max_abs_r": 0.97, "acceptance_abs_r": 0.5, "meets_acceptance": False, "cap_abs_r": 0.95}
    rel = {"align_pre~drift_panel_score|loss_split": _rel(-0.7, -0.9, -0.3),
           "align_pre~drift_panel_score|loss_reduction": _rel(0.5, 0.2, 0.8), "collinearity": col}
    _write(tmp_path, rows, rel, main_drift="drift_panel_score")
    v = DR.c7_alignment_beyond_loss(tmp_path)
    assert v.label == INCONCLUSIVE and "|loss_split" in v.reason and "uncapped: not supported" in v.reason
    assert "collinearity: abs r(alignment, loss reduction) 0.970" in v.shortfall[0]
    col.update(max_abs_r=0.4, meets_acceptance=True)
    _write(tmp_path, rows, rel, main_drift="drift_panel_score")
    v = DR.c7_alignment_beyond_loss(tmp_path)
    assert v.label == NOT_SUPPORTED and "design acceptance <= 0.5: met" in v.reason


def test_c6_uses_the_main_drift_and_names_the_best_predictor(tmp_path):
    rows = _rows({"inoc": [-0.8, -0.82, -0.85]})
    rel = {"align_pre~drift_panel_score": _rel(0.6, 0.3, 0.8), "align_pre~drift_score": _rel(-0.9, -1, -0.8),
           "loss_reduction_trait~drift_panel_score": _rel(-0.8, -0.9, -0.6),
           "rank:align_pre~drift_panel_score": _rel(0.7, 0.4, 0.9),
           "auroc:align_pre~drift_panel_score": {"auroc": 0.9, "lo": 0.7, "hi": 1.0, "threshold": 0.45, "n_high": 5,
                                                 "n_low": 11, "n_groups": 16}}
    _write(tmp_path, rows, rel, main_drift="drift_panel_score")
    v = DR.c6_drift_tracks_alignment(tmp_path)
    assert v.label == SUPPORTED and "rank r +0.70" in v.reason and "AUROC for drift >= 0.45" in v.reason
    assert "the larger |r|: loss reduction trait" in v.reason
    rel["align_pre~drift_panel_score"] = _rel(0.6, 0.3, 0.8, groups=4)
    _write(tmp_path, rows, rel, main_drift="drift_panel_score")
    v = DR.c6_drift_tracks_alignment(tmp_path)
    assert v.label == INCONCLUSIVE and v.shortfall == ("training prompts: 4, needed 6 (2 short)",)
