"""experiments/precision_ab.py: run-by-run differences against a reference, and refusal to compare different runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location(
    "precision_ab", ROOT / "experiments" / "precision_ab.py")
pab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pab)


def _run(folder: Path, cond: str, seed: int, losses: list[float], cos: float, drift: float, autocast: str = "model",
         step_s: float | None = 0.4) -> None:
    d = folder / f"{cond}_seed{seed}"
    d.mkdir(parents=True)
    train = {"condition": cond, "seed": seed, "system_prompt": f"prompt {cond}", "step_ids": [["a", "b"]] * len(losses),
             "probe_ids": ["a"], "finetune_config": {"train_autocast": autocast}, "losses": losses,
             "probes": [{"step": 0, "loss": 1.0, "cos": [[cos, 0.0]]}, {"step": 2, "loss": losses[-1], "cos": [[cos, 0.1]]}]}
    if step_s is not None:
        train["timing_s"] = {"train_steps": step_s * len(losses)}
    score = {"mean_score": drift}
    (d / "train.json").write_text(json.dumps(train))
    (d / "drift.json").write_text(json.dumps({"neutral_prompt": {"drift": score},
                                              "training_prompt": {"post": {"mean_score": 0.9}}}))


def _sets(tmp_path: Path, test_shift: float) -> tuple[Path, Path, Path]:
    ref, rer, tst = tmp_path / "ref", tmp_path / "rer", tmp_path / "tst"
    for s in (0, 1):
        _run(ref, "neutral", s, [1.0, 0.8, 0.6], 0.05, 0.9, step_s=None)
        _run(ref, "inoc", s, [1.0, 0.7, 0.5], 0.04, 0.1, step_s=None)
        _run(tst, "neutral", s, [1.0, 0.8 + test_shift, 0.6], 0.05 + test_shift, 0.9, "tf32", 0.26)
        _run(tst, "inoc", s, [1.0, 0.7, 0.5], 0.04, 0.1 - test_shift, "tf32", 0.26)
    _run(rer, "neutral", 0, [1.0, 0.8, 0.6], 0.05, 0.9)
    _run(rer, "inoc", 0, [1.0, 0.7, 0.5], 0.04, 0.1)
    return ref, rer, tst


def test_identical_rerun_gives_zero_and_the_test_shift_is_found(tmp_path):
    res = pab.compare(*_sets(tmp_path, 0.01))
    rer, tst = res["summary"]["rerun"], res["summary"]["test"]
    assert rer["n_runs"] == 2 and tst["n_runs"] == 4
    assert rer["loss_max_abs_diff"]["max_abs"] == 0 and rer["drift_diff"]["max_abs"] == 0
    assert tst["loss_max_abs_diff"]["max_abs"] == pytest.approx(0.01)
    assert tst["probe_cos_max_abs_diff"]["max_abs"] == pytest.approx(0.01)
    assert tst["drift_diff"]["max_abs"] == pytest.approx(0.01)
    assert tst["step_s_median"] == {"reference": None, "this": pytest.approx(0.26)}  # the reference had no timing
    assert rer["step_s_median"]["this"] == pytest.approx(0.4)
    c5 = res["c5_inoc_minus_neutral_drift"]
    assert c5["reference"] == {"0": pytest.approx(-0.8), "1": pytest.approx(-0.8)}
    assert c5["test"]["0"] == pytest.approx(-0.81) and c5["rerun"] == {"0": pytest.approx(-0.8)}
    assert res["runs"]["test"]["neutral_seed0"]["train_autocast"] == ["model", "tf32"]


def test_refuses_runs_of_different_data_or_without_reference(tmp_path):
    ref, rer, tst = _sets(tmp_path, 0.0)
    t = json.loads((tst / "inoc_seed1" / "train.json").read_text())
    t["step_ids"][0] = ["b", "a"]
    (tst / "inoc_seed1" / "train.json").write_text(json.dumps(t))
    with pytest.raises(ValueError, match="step_ids"):
        pab.compare(ref, rer, tst)
    _run(rer, "explicit", 0, [1.0], 0.0, 0.0)
    with pytest.raises(ValueError, match="without a reference.*explicit_seed0"):
        pab.compare(ref, rer, tst)
