"""The drift summary from run files alone: on the published ALL-CAPS runs it reproduces the published relation,
and with the issue-16 inputs added (tests/_synthetic_run.py) it derives the loss split, panel drift and transfer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnsight_inoc.stages.drift_summary import add_loss_reductions, panel_pairs, summarise_runs, transfer_values
from tests import _synthetic_run as S


@pytest.fixture(scope="module")
def new_run(tmp_path_factory: pytest.TempPathFactory):
    layout = S.build(tmp_path_factory.mktemp("d") / "allcaps")
    summ = summarise_runs(layout, S.conditions(), S.SEEDS, 27, "main", n_boot=200, seed=0)
    return layout, summ


def test_loss_split_rows(new_run):
    _, summ = new_run
    for r in summ["rows"]:
        assert r["loss_reduction_trait"] == pytest.approx(-0.3 * S.content_shift(r["condition"]), abs=1e-12)
        assert r["loss_reduction_content"] == pytest.approx(r["loss_reduction"] - r["loss_reduction_trait"])


def test_panel_drift_is_the_main_measure(new_run):
    _, summ = new_run
    assert summ["main_drift"] == "drift_panel_score" == summ["relation"]["main_target"]
    for r in summ["rows"]:  # the offsets average to 0 over the panel
        assert r["drift_panel_score"] == pytest.approx(r["drift_score"])
        assert sorted(r["drift_panel_by_prompt"]) == sorted(S.PANEL)
    inoc = [r["drift_score"] for r in summ["rows"] if r["condition"] == "inoc"]
    blk = summ["panel"]["by_condition"]["inoc"]
    assert blk["mean"] == pytest.approx(np.mean(inoc)) and blk["n_rows"] == 3 and blk["n_cols"] == 5
    pairs = summ["panel"]["contrasts"]
    diffs = [a["drift_score"] - b["drift_score"] for a in summ["rows"] for b in summ["rows"]
             if a["condition"] == "inoc" and b["condition"] == "neutral" and a["seed"] == b["seed"]]
    assert pairs["inoc-neutral"]["mean"] == pytest.approx(np.mean(diffs))
    assert "inoc-lossmatch" in pairs and pairs["inoc-neutral"]["hi"] < 0


def test_contrasts_at_the_unit_of_replication(new_run):
    """Issue 22: the per-seed contrasts the verdicts read, on each run's panel mean, for the standard pairs run."""
    from nnsight_inoc.stats.intervals import mean_ci

    layout, summ = new_run
    blk = summ["contrasts"]
    assert blk["measure"] == "drift_panel_score" and blk["negligible_drift"] == 0.05 and blk["min_seeds"] == 3
    assert list(blk["pairs"]) == ["inoc-neutral", "lossmatch-neutral", "explicit-neutral"]  # no causal arms run
    by = {(r["condition"], r["seed"]): r["drift_panel_score"] for r in summ["rows"]}
    c = blk["pairs"]["inoc-neutral"]
    diffs = [by["inoc", s] - by["neutral", s] for s in S.SEEDS]
    assert c["per_seed"] == pytest.approx(diffs) and c["seeds"] == list(S.SEEDS) and c["n_seeds"] == 3
    m, lo, hi, _ = mean_ci(diffs)
    assert (c["estimate"], c["lo"], c["hi"]) == pytest.approx((m, lo, hi)) and c["sign_flip_p"] == pytest.approx(0.25)
    on_disk = json.loads(layout.summary(False).read_text())["contrasts"]["pairs"]["inoc-neutral"]
    assert on_disk["per_seed"] == pytest.approx(diffs)


def test_transfer_and_the_new_relation_entries(new_run):
    layout, summ = new_run
    for r in summ["rows"]:
        assert r["transfer"] == pytest.approx(S.transfer_inner(r["condition"]))
        assert r["transfer_panel"] == pytest.approx(S.transfer_inner(r["condition"]))
    rel = summ["relation"]
    for key in ("align_pre~drift_panel_score|loss_split", "loss_reduction_trait~drift_panel_score",
                "rank:transfer~drift_panel_score", "auroc:align_pre~drift_panel_score"):
        assert key in rel and "error" not in rel[key], key
    assert rel["transfer_ranking"]["n"] == len(S.conditions())
    assert rel["collinearity"]["multiple_r_loss_split"] is not None
    assert layout.projection_vs_score_plot(False).stat().st_size > 1000
    assert json.loads(layout.summary(False).read_text())["main_drift"] == "drift_panel_score"


def test_published_runs_reproduce_the_published_relation(tmp_path):
    """No issue-16 inputs: the same relation and correlations as the published summary, to the last digit."""
    import shutil

    run = tmp_path / "allcaps"
    shutil.copytree(S.ALLCAPS / "finetune", run / "finetune",
                    ignore=shutil.ignore_patterns("steer_*", "steering_*", "*.png"))
    old = json.loads((S.ALLCAPS / "finetune" / "finetune_summary.json").read_text())
    from nnsight_inoc.core.layout import RunLayout

    new = summarise_runs(RunLayout(run), S.conditions(), S.SEEDS, 27, "main", n_boot=2000, seed=0)
    for key in ("align_pre~drift_score", "loss_reduction~drift_score", "align_pre~drift_score|loss_reduction"):
        for k in ("r", "lo", "hi"):
            assert new["relation"][key][k] == pytest.approx(old["relation"][key][k], abs=1e-12)
    assert new["main_drift"] == "drift_score" and "panel" not in new
    assert new["contrasts"]["measure"] == "drift_score" and "inoc-neutral" in new["contrasts"]["pairs"]
    assert all(r["loss_reduction_trait"] is None for r in new["rows"])


def test_helpers():
    rows = [{"condition": "neutral", "seed": 0, "probe_loss_pre": 1.0, "probe_content_loss_pre": 0.6},
            {"condition": "inoc", "seed": 0, "probe_loss_pre": 0.9, "probe_content_loss_pre": 0.58},
            {"condition": "inoc", "seed": 1, "probe_loss_pre": 0.9, "probe_content_loss_pre": None}]
    add_loss_reductions(rows)
    assert rows[1]["loss_reduction"] == pytest.approx(0.1)
    assert rows[1]["loss_reduction_content"] == pytest.approx(0.02)
    assert rows[1]["loss_reduction_trait"] == pytest.approx(0.08)
    assert rows[2]["loss_reduction"] is None and rows[2]["loss_reduction_trait"] is None
    assert panel_pairs(["neutral", "inoc", "leak_inoc", "lossmatch"]) == [
        ("inoc", "neutral"), ("leak_inoc", "neutral"), ("lossmatch", "neutral"), ("inoc", "leak_inoc")]


def test_transfer_file_shape_is_checked(tmp_path):
    from nnsight_inoc.core.layout import RunLayout

    layout = RunLayout(tmp_path)
    assert transfer_values(layout) == {}
    layout.transfer_dir.mkdir()
    layout.transfer_json.write_text(json.dumps({"conditions": {"inoc": {"cos": 0.1}}}))
    with pytest.raises(ValueError, match="no 'inner'"):
        transfer_values(layout)
    layout.transfer_json.write_text(json.dumps({"conditions": {"inoc": {"inner": 1.0, "panel": {"p": "x"}}}}))
    with pytest.raises(ValueError, match="panel entries"):
        transfer_values(layout)
