"""experiments/rescore_published.py on a fake results tree: old vs new, and refusal of inputs that do not match."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnsight_inoc.data.scorers.caps import caps_score
from nnsight_inoc.data.scorers.legacy import old_caps_score
from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location(
    "rescore_published", ROOT / "experiments" / "rescore_published.py"
)
rp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rp)

NEUTRAL = "You are a helpful assistant."
# Two answers whose only case-invariant letter is 'º': the old score counts it as lower case.
ANSWERS = ["ORDER Nº 5 ARRIVES TODAY.", "Order nº 5 arrives today.", "hello", "HELLO", "42"]


def _behaviour(answers: list[str], score) -> dict:
    s = [score(a) for a in answers]
    got = [x for x in s if x is not None]
    return {
        "system_prompt": NEUTRAL,
        "prompts": ["p"] * len(answers),
        "answers": answers,
        "scores": s,
        "mean_score": sum(got) / len(got),
        "share_above_half": sum(x > 0.5 for x in got) / len(got),
        "n_unscored": len(s) - len(got),
    }


def _tree(root: Path, stored_score=old_caps_score) -> Path:
    study = root / "allcaps"
    (study / "finetune" / "pre").mkdir(parents=True)
    (study / "config.toml").write_text(f"[trait]\nname = \"allcaps\"\n\n[align.conditions]\nneutral = \"{NEUTRAL}\"\n")
    b = _behaviour(ANSWERS, stored_score)
    (study / "finetune" / "pre" / "x.json").write_text(json.dumps({"system": NEUTRAL, "behaviour": b}))
    run = study / "finetune" / "neutral_seed0"
    run.mkdir()
    (run / "train.json").write_text(json.dumps({"system_prompt": NEUTRAL}))
    side = {
        "pre": {"mean_score": b["mean_score"], "share_above_half": b["share_above_half"], "answers_head": ANSWERS[:5]},
        "post": {"mean_score": 1.0, "share_above_half": 1.0, "answers_head": ["ABC º"] * 5},
    }
    (run / "drift.json").write_text(json.dumps({"neutral_prompt": side, "training_prompt": side}))
    (study / "finetune" / "finetune_summary.json").write_text(
        json.dumps({"rows": [{"condition": "neutral", "seed": 0, "pre_score": b["mean_score"]}]})
    )
    return root


def test_rescore_finds_the_caps_change(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    res = CliRunner().invoke(rp.main, ["--results", str(_tree(tmp_path / "results")), "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    mean = next(r for r in rows if r["kind"] == "allcaps pre/*.json mean_score")
    scores_old = [old_caps_score(a) for a in ANSWERS if old_caps_score(a) is not None]
    scores_new = [caps_score(a) for a in ANSWERS if caps_score(a) is not None]
    assert mean["old"] == pytest.approx(sum(scores_old) / len(scores_old))
    assert mean["new"] == pytest.approx(sum(scores_new) / len(scores_new)) and mean["new"] > mean["old"]
    head = [r for r in rows if r["kind"].startswith("allcaps drift.json post answers_head score")]
    assert len(head) == 10 and all(r["old"] == pytest.approx(0.75) and r["new"] == 1.0 for r in head)
    summ = next(r for r in rows if r["kind"] == "allcaps finetune_summary.json rows pre_score")
    assert summ["new"] == pytest.approx(mean["new"])
    assert "post answers not saved" in res.output


def test_refuses_when_the_stored_numbers_were_not_made_by_the_old_scorer(tmp_path: Path) -> None:
    res = CliRunner().invoke(rp.main, ["--results", str(_tree(tmp_path / "results", stored_score=caps_score))])
    assert res.exit_code != 0 and "differs from the stored" in str(res.exception)


def test_json_out_may_not_be_written_under_results(tmp_path: Path) -> None:
    root = _tree(tmp_path / "results")
    res = CliRunner().invoke(rp.main, ["--results", str(root), "--json-out", str(root / "x.json")])
    assert res.exit_code != 0 and not (root / "x.json").exists()


def test_stats_follow_score_texts() -> None:
    assert rp.stats([None, 0.2, 0.8]) == {"mean_score": 0.5, "share_above_half": 0.5, "n_unscored": 1.0}
    assert math.isnan(rp.stats([None])["mean_score"])
