"""Drift contrasts at the unit of replication: per-seed run means, paired by seed, t-interval over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from nnsight_inoc.stats.contrasts import drift_measure, run_drift, seed_contrast
from nnsight_inoc.stats.intervals import mean_ci

PROMPTS = [f"p{k}" for k in range(5)]


def _panel_rows() -> list[dict]:
    """3 seeds x 5 panel prompts; the seed effect is large and shared by every prompt of a run, the prompt-to-
    prompt spread within a run small: 15 cells look like many replicates, but there are 3 trained models."""
    rng = np.random.default_rng(0)
    rows = []
    for s, seed_shift in enumerate((-0.20, 0.05, 0.15)):
        rows.append({"condition": "neutral", "seed": s, "drift_score": 0.9,
                     "drift_panel_by_prompt": {p: 0.9 for p in PROMPTS}})
        rows.append({"condition": "inoc", "seed": s, "drift_score": 0.5,
                     "drift_panel_by_prompt": {p: 0.6 + seed_shift + 0.01 * rng.standard_normal() for p in PROMPTS}})
    return rows


def test_panel_prompts_are_averaged_within_the_run_first():
    rows = _panel_rows()
    blk = seed_contrast(rows, "inoc", "neutral")
    assert blk["measure"] == "drift_panel_score" and blk["seeds"] == [0, 1, 2] and blk["n_seeds"] == 3
    per_seed = [np.mean(list(r["drift_panel_by_prompt"].values())) - 0.9 for r in rows if r["condition"] == "inoc"]
    assert blk["per_seed"] == pytest.approx(per_seed)
    m, sd = np.mean(per_seed), np.std(per_seed, ddof=1)
    half = sps.t.ppf(0.975, 2) * sd / math.sqrt(3)  # by hand: t-interval over the 3 per-seed panel means
    assert blk["estimate"] == pytest.approx(m) and blk["lo"] == pytest.approx(m - half)
    assert blk["hi"] == pytest.approx(m + half)
    cells = [v - 0.9 for r in rows if r["condition"] == "inoc" for v in r["drift_panel_by_prompt"].values()]
    _, lo15, hi15, n15 = mean_ci(cells)  # test prompts as if replicates: 15 "replicates", far narrower
    assert n15 == 15 and (hi15 - lo15) < 0.3 * (blk["hi"] - blk["lo"])
    assert blk["sign_flip_p"] == pytest.approx(0.25) and blk["min_sign_flip_p"] == pytest.approx(0.25)


def test_the_panel_score_when_present_and_the_neutral_prompt_without_a_panel():
    assert run_drift({"drift_panel_score": 0.3, "drift_panel_by_prompt": {"p": 9.0}}, "drift_panel_score") == 0.3
    assert run_drift({"drift_score": 0.1}, "drift_panel_score") is None
    rows = [{"condition": c, "seed": s, "drift_score": d + s / 100} for s in range(3)
            for c, d in (("neutral", 0.9), ("inoc", 0.2))]
    assert drift_measure(rows) == "drift_score"
    rows[0]["drift_panel_score"] = 0.5  # one run with a panel is not "the runs have a panel"
    assert drift_measure(rows) == "drift_score"
    blk = seed_contrast(rows, "inoc", "neutral")
    assert blk["measure"] == "drift_score" and blk["per_seed"] == pytest.approx([-0.7] * 3)
    assert blk["lo"] == pytest.approx(-0.7) and blk["hi"] == pytest.approx(-0.7)


def test_only_seeds_both_sides_have_are_paired():
    rows = [{"condition": "a", "seed": s, "drift_score": 0.1 * s} for s in (0, 1, 2)]
    rows += [{"condition": "b", "seed": s, "drift_score": 0.0} for s in (1, 2, 3)]
    blk = seed_contrast(rows, "a", "b")
    assert blk["seeds"] == [1, 2] and blk["a_seeds"] == [0, 1, 2] and blk["b_seeds"] == [1, 2, 3]
    assert blk["n_seeds"] == 2 and blk["estimate"] == pytest.approx(0.15)
    one = seed_contrast(rows[:1] + rows[3:4], "a", "b")
    assert one["n_seeds"] == 0 and one["estimate"] is None and one["lo"] is None and one["sign_flip_p"] is None
    with pytest.raises(ValueError, match="two a runs of seed 0"):
        seed_contrast(rows + [rows[0]], "a", "b")
