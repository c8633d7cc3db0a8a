"""tools/compare_runs.py: equal run folders pass, and every kind of difference is found and counted."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from tools.compare_runs import compare_runs, main

TRAIN = {"condition": "inoc", "losses": [1.5, 1.25], "probes": [{"step": 0, "cos": [[0.1, -0.2]], "loss": 2.0}],
         "wall_s": 10.0, "timing_s": {"probes": 1.0}, "peak_cuda_memory_gb": None, "steering": None}
DRIFT = {"n_prompts": 3, "neutral_prompt": {"drift": {"mean_score": 0.5, "projection": [0.1, 0.2]},
                                            "post": {"answers_head": ["HELLO"]}}}


def _folder(root: Path, runs: dict[str, tuple[dict, dict]]) -> Path:
    for name, (train, drift) in runs.items():
        d = root / "finetune" / name
        d.mkdir(parents=True)
        (d / "train.json").write_text(json.dumps(train))
        (d / "drift.json").write_text(json.dumps(drift))
    return root


def test_same_numbers_pass_and_wall_clock_and_batching_are_ignored(tmp_path, capsys):
    b_train = {**TRAIN, "wall_s": 99.0, "timing_s": {"probes": 7.0}, "peak_cuda_memory_gb": {"allocated": 4.0},
               "executor": {"k": 4, "group": ["inoc_seed0"]}}  # the grouped executor's batching
    b_drift = {**DRIFT, "measured_with": ["inoc_seed0", "neutral_seed0"]}
    a = _folder(tmp_path / "a", {"inoc_seed0": (TRAIN, DRIFT)})
    b = _folder(tmp_path / "b", {"inoc_seed0": (b_train, b_drift), "only_here_seed0": (TRAIN, DRIFT)})
    res = compare_runs(a, b)
    assert res["same"] and res["n_runs"] == 1 and res["max_abs_diff"] == 0.0
    assert res["runs"]["inoc_seed0"]["train.json"]["numbers"] == 6  # 2 losses, step, 2 cos, loss
    assert main([str(a), str(b)]) == 0 and "SAME: 1 runs" in capsys.readouterr().out


def test_every_kind_of_difference_is_found(tmp_path):
    drift = copy.deepcopy(DRIFT)
    drift["neutral_prompt"]["drift"]["projection"][1] = 0.2 + 1e-7  # a number
    drift["neutral_prompt"]["post"]["answers_head"] = ["HELLO!"]  # a text
    train = {**TRAIN, "losses": [1.5], "steering": {"alpha": 0.1}, "extra": 1}  # length, type, key
    a = _folder(tmp_path / "a", {"r_seed0": (TRAIN, DRIFT)})
    b = _folder(tmp_path / "b", {"r_seed0": (train, drift)})
    res = compare_runs(a, b)
    assert not res["same"]
    paths = {p for f in res["runs"]["r_seed0"].values() for p, _, _ in f["first"]}
    assert paths == {"/losses (length)", "/steering", "/extra", "/neutral_prompt/drift/projection[1]",
                     "/neutral_prompt/post/answers_head[0]"}
    assert abs(res["runs"]["r_seed0"]["drift.json"]["max_abs_diff"] - 1e-7) < 1e-12
    loose = compare_runs(a, b, tol=1e-6)["runs"]["r_seed0"]["drift.json"]
    assert loose["differ"] == 1  # the text still differs; the number is within tol
    assert main([str(a), str(b)]) == 1
    assert main([str(a), str(tmp_path / "empty")]) == 2
