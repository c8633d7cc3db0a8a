"""perf/greedy_flips.py: alone vs grouped greedy drift answers, flips counted and tested for ties."""

from __future__ import annotations

import importlib.util
import json

import torch
from click.testing import CliRunner

from nnsight_inoc.core.config import load_config
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.models.load import load_model
from nnsight_inoc.train.grouped import fresh
from nnsight_inoc.train.grouped_io import save_peft
from tests._paths import ROOT
from tests._runs import tiny_run

_spec = importlib.util.spec_from_file_location("greedy_flips", ROOT / "perf" / "greedy_flips.py")
gf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gf)


def test_answers_are_compared_through_the_first_stop():
    assert gf.through_first_stop([5, 6, 2, 0, 0], [2, 9]) == [5, 6, 2]
    assert gf.through_first_stop([5, 6, 7], [2]) == [5, 6, 7]
    assert gf.first_difference([5, 6, 2], [5, 6, 2]) is None
    assert gf.first_difference([5, 6, 2], [5, 7, 2]) == 1
    assert gf.first_difference([5, 2], [5, 6, 2]) == 1  # stopping early is a difference
    assert gf.first_difference([5, 6], [5, 6, 7]) == 2


def test_a_flip_is_a_tie_only_when_the_tokens_are_closer_than_the_arrangements_differ():
    alone = torch.tensor([0.0, 3.0, 2.9999, -1.0])
    grouped = alone + torch.tensor([0.0, -1e-4, 1e-4, 0.0])  # the order of tokens 1 and 2 swaps
    tie = gf.classify_flip(alone, grouped, 1, 2)
    assert tie["tie"] and tie["margin"] > 0 and tie["margin_grouped"] > 0
    far = gf.classify_flip(alone, alone + 1e-6, 1, 3)
    assert not far["tie"] and abs(far["margin"] - 4.0) < 1e-9


def test_summary_counts():
    groups = [{"runs": [{"run": "a", "answers": 4, "identical": 3, "mean_score_diff": 0.0},
                        {"run": "b", "answers": 4, "identical": 4, "mean_score_diff": 0.25},
                        {"run": "c", "answers": 4, "identical": 4, "mean_score_diff": None}],
               "flips": [{"tie": True}]}]
    s = gf.summarise(groups)
    assert (s["answers"], s["identical"], s["flips"], s["ties"], s["identical_or_ties"]) == (12, 11, 1, 1, True)
    assert s["max_mean_score_diff"] == 0.25 and s["runs_without_scorable_answers"] == ["c"]


def _trained_looking_runs(tmp_path):
    """A tiny run folder whose main runs have adapters with random, non-zero LoRA B (no training needed)."""
    _, run = tiny_run(tmp_path)
    cfg = load_config(run / "config.toml")
    loaded = load_model(cfg.model.name, device="cpu")
    torch.manual_seed(0)
    f = cfg.finetune
    lora = fresh(loaded.hf_model, 3, f.rank, f.alpha, f.target_modules)
    for b in lora.B:
        b.data.normal_(0, 0.5)  # PEFT's B starts at zero; a trained-looking update makes the runs differ
    layout = RunLayout(run)
    names = []
    for k, cond in enumerate(("neutral", "inoc", "explicit")):
        save_peft(lora, k, layout.run(cond, 0).adapter, None)
        names.append(f"{cond}_seed0")
    return run, names


def test_tool_on_tiny_runs(tmp_path, monkeypatch):
    run, names = _trained_looking_runs(tmp_path)
    out = tmp_path / "flips.json"
    args = ["--run-dir", str(run), "--k", "3", "--out", str(out)]
    res = CliRunner().invoke(gf.main, [*args, "--config", str(run / "config.toml")])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    s = data["summary"]
    assert [r["run"] for r in data["groups"][0]["runs"]] == names
    assert s["answers"] == 3 * data["n_prompts"] and s["identical"] + s["flips"] == s["answers"]
    assert s["flips"] == 0 and s["max_mean_score_diff"] == 0.0  # fp32 on the CPU: the batch shape changes nothing

    # a flip planted in the grouped decode is found at its step and, far from a tie, called one
    real = gf.greedy_new_ids_by_system

    def planted(model, tok, systems, users, *a, **k):
        ids = real(model, tok, systems, users, *a, **k)
        if len(systems) == 3:
            row = ids[1][0]
            row[1] = (row[1] + 7) % 100  # another token at step 1 of run 1's first answer
        return ids

    monkeypatch.setattr(gf, "greedy_new_ids_by_system", planted)
    res = CliRunner().invoke(gf.main, [*args, "--config", str(run / "config.toml")])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    (flip,) = data["groups"][0]["flips"]
    assert (flip["run"], flip["prompt"], flip["step"]) == ("inoc_seed0", 0, 1)
    assert flip["tie"] is False and flip["margin"] > flip["arrangement_diff"]
    assert data["summary"]["identical_or_ties"] is False


def test_fewer_than_two_runs_is_refused(tmp_path):
    _, run = tiny_run(tmp_path)
    res = CliRunner().invoke(gf.main, ["--run-dir", str(run), "--out", str(tmp_path / "x.json")])
    assert res.exit_code != 0 and "need at least 2" in res.output
