"""perf/greedy_flips.py: merged drift answers vs one run, one measurement at a time; flips counted and tested for ties."""

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
    merged = alone + torch.tensor([0.0, -1e-4, 1e-4, 0.0])  # the order of tokens 1 and 2 swaps
    tie = gf.classify_flip(alone, merged, 1, 2)
    assert tie["tie"] and tie["margin"] > 0 and tie["margin_merged"] > 0
    far = gf.classify_flip(alone, alone + 1e-6, 1, 3)
    assert not far["tie"] and abs(far["margin"] - 4.0) < 1e-9


def _rec(run: str, measurement: str, same: int, diff: float | None) -> dict:
    return {"run": run, "measurement": measurement, "answers": 4, "identical": same, "mean_score_diff": diff}


def test_summary_counts():
    rec = _rec
    groups = [{"measurements": [rec("a", "neutral_prompt", 3, 0.0), rec("b", "neutral_prompt", 4, 0.25),
                                rec("a", "panel: P", 4, None)],
               "flips": [{"measurement": "neutral_prompt", "tie": True}]}]
    s = gf.summarise(groups)
    assert (s["answers"], s["identical"], s["flips"], s["ties"], s["identical_or_ties"]) == (12, 11, 1, 1, True)
    assert s["by_measurement"] == {
        "neutral_prompt": {"answers": 8, "identical": 7, "flips": 1, "ties": 1, "identical_or_ties": True},
        "panel: P": {"answers": 4, "identical": 4, "flips": 0, "ties": 0, "identical_or_ties": True}}
    assert s["max_mean_score_diff"] == 0.25 and s["without_scorable_answers"] == ["a / panel: P"]


PANEL = ["Answer the question below.", "You are a knowledgeable assistant."]


def _trained_looking_runs(tmp_path):
    """A tiny run folder with a drift panel whose main runs have adapters with random, non-zero LoRA B (no training
    needed)."""
    _, run = tiny_run(tmp_path, drift={"panel": PANEL, "panel_prompts": 3, "panel_max_new_tokens": 2})
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
    assert data["groups"][0]["runs"] == names and data["rows_per_call"] == 1024
    labels = ["neutral_prompt", "training_prompt"] + [f"panel: {p}" for p in PANEL]
    assert list(s["by_measurement"]) == labels
    assert [s["by_measurement"][m]["answers"] for m in labels] == [3 * data["n_prompts"]] * 2 + [3 * 3] * len(PANEL)
    assert s["answers"] == 3 * (2 * data["n_prompts"] + 3 * len(PANEL)) and s["identical"] + s["flips"] == s["answers"]
    assert s["flips"] == 0 and s["max_mean_score_diff"] == 0.0  # fp32 on the CPU: the batch shape changes nothing

    # a flip planted in the merged decode is found at its measurement and step and, far from a tie, called one
    real = gf.greedy_new_ids_merged

    def planted(model, tok, measurements, rows_per_call, *a, **k):
        ids, calls = real(model, tok, measurements, rows_per_call, *a, **k)
        row = ids[1][1][0]  # the training prompt's measurement, run 1, first prompt
        row[1] = (row[1] + 7) % 100  # another token at step 1
        return ids, calls

    monkeypatch.setattr(gf, "greedy_new_ids_merged", planted)
    res = CliRunner().invoke(gf.main, [*args, "--config", str(run / "config.toml")])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    (flip,) = data["groups"][0]["flips"]
    assert (flip["run"], flip["measurement"], flip["prompt"], flip["step"]) == ("inoc_seed0", "training_prompt", 0, 1)
    assert flip["tie"] is False and flip["margin"] > flip["arrangement_diff"]
    by = data["summary"]["by_measurement"]
    assert by["training_prompt"]["flips"] == 1 and by["neutral_prompt"]["flips"] == 0
    assert data["summary"]["identical_or_ties"] is False


def test_fewer_than_two_runs_is_refused(tmp_path):
    _, run = tiny_run(tmp_path)
    res = CliRunner().invoke(gf.main, ["--run-dir", str(run), "--out", str(tmp_path / "x.json")])
    assert res.exit_code != 0 and "need at least 2" in res.output
