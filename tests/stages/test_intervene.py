"""The gradient-intervention arms as training conditions, end to end on a tiny random Qwen2 (issue 22).

Pinned here: the arms are main conditions under their base prompts; every probe of zero_v reads
exactly 0 alignment at every layer and position; restore_v's step-0 probe equals the neutral run's
at a_sum at every edited layer (its factors recorded); flip_v reverses the top layer's alignment;
zero_rand records its seeded directions; the grouped executor equals the sequential one with the
arms in the group (each edit on its own row block); a run trained under another intervention is
refused; configs are validated before any training.
"""

from __future__ import annotations

import json

import pytest
import torch

from nnsight_inoc.core.artifacts import read_json
from nnsight_inoc.core.config import ConfigError, from_dict
from nnsight_inoc.measures.intervention import ARMS, InterveneSpec, random_directions, unit
from nnsight_inoc.stages.plan import build_plan, training_conditions
from tests._study import tiny_study_folder
from tests.test_pipeline import copy_without_runs

ALL_ARMS = ["zero_v", "zero_rand", "flip_v", "restore_v"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from nnsight_inoc.stages.executors import run_finetune
    from nnsight_inoc.stages.extract import run_extract
    from nnsight_inoc.study import open_study

    root = tmp_path_factory.mktemp("arms")
    cfg, run_dir = tiny_study_folder(root, intervene={"arms": ALL_ARMS})
    cfg.finetune.seeds = [0]
    st = open_study(cfg, run_dir, "pytest")
    run_extract(st)
    run_finetune(st, "main")
    return st


def _grouped_copy(study, tmp_path, label: str, checkpointing: str = "none"):
    """The study's folder without its runs, opened under the grouped executor: (folder, study)."""
    from nnsight_inoc.study import open_study

    copy = tmp_path / "run"
    copy_without_runs(study.run_dir, copy)
    cfg = study.cfg.model_copy(deep=True)
    cfg.execution.executor = "grouped"
    cfg.execution.activation_checkpointing = checkpointing
    return copy, open_study(cfg, copy, label)


def _tj(run_dir, cond: str, seed: int = 0) -> dict:
    return read_json(run_dir / "finetune" / f"{cond}_seed{seed}" / "train.json")


def test_arms_are_main_conditions_under_their_base_prompts(study):
    conds = training_conditions(study, "main")
    prompts = study.cfg.align.conditions
    for arm in ALL_ARMS:
        assert conds[arm] == prompts[ARMS[arm]["base"]]
    assert "zero_v" not in training_conditions(study, "variants")
    plan = build_plan(study, "main", for_training=False)
    spec = next(r for r in plan.runs if r.condition == "zero_rand").intervene
    assert spec == InterveneSpec("zero_rand", tuple(range(study.tlm.n_layers)), 0)


def test_zero_v_probe_reads_no_alignment_at_any_layer(study):
    rec = _tj(study.run_dir, "zero_v")
    assert rec["intervention"]["arm"] == "zero_v" and rec["intervention"]["scale"] == 0.0
    neutral = _tj(study.run_dir, "neutral")
    for p, pn in zip(rec["probes"], neutral["probes"]):
        assert float(torch.tensor(p["cos"]).abs().max()) < 1e-5  # every layer, every position
    assert float(torch.tensor(neutral["probes"][0]["cos"]).abs().max()) > 1e-3
    assert rec["losses"] != neutral["losses"] or rec["probes"][-1]["loss"] != neutral["probes"][-1]["loss"]


def test_restore_v_step0_alignment_equals_neutral_at_a_sum(study):
    rec = _tj(study.run_dir, "restore_v")
    inoc, neutral = _tj(study.run_dir, "inoc"), _tj(study.run_dir, "neutral")
    j = rec["positions"].index("a_sum")
    got = torch.tensor(rec["probes"][0]["cos"])[:, j]
    want = torch.tensor(neutral["probes"][0]["cos"])[:, j]
    torch.testing.assert_close(got, want, rtol=0, atol=2e-4)
    assert not torch.allclose(torch.tensor(inoc["probes"][0]["cos"])[:, j], want, atol=2e-4)
    restore = rec["intervention"]["restore"]
    assert set(restore["factors"]) == {str(l) for l in range(study.tlm.n_layers)}
    assert restore["max_abs_gap"] < 1e-3 and all(s >= 0 for s in restore["factors"].values())
    assert restore["required_layer"] == build_plan(study, "main", for_training=False).layer
    saved = read_json(study.layout.restore_record)  # measured once, before any run trained; reused by each seed
    assert saved["record"] == restore and saved["key"]["layers"] == list(range(study.tlm.n_layers))
    assert rec["system_prompt"] == inoc["system_prompt"]
    assert rec["probes"][0]["loss"] == pytest.approx(inoc["probes"][0]["loss"], rel=1e-6)  # forward unchanged


def test_flip_v_reverses_the_top_layer_and_zero_rand_records_its_directions(study):
    flip, neutral = _tj(study.run_dir, "flip_v"), _tj(study.run_dir, "neutral")
    top = study.tlm.n_layers - 1
    torch.testing.assert_close(torch.tensor(flip["probes"][0]["cos"])[top],
                               -torch.tensor(neutral["probes"][0]["cos"])[top], rtol=1e-4, atol=1e-6)
    rand = _tj(study.run_dir, "zero_rand")["intervention"]
    u = random_directions(study.tlm.n_layers, study.tlm.d_model, 0)
    v = unit(build_plan(study, "main", for_training=False).v)
    assert rand["rand_seed"] == 0 and len(rand["directions_sha256"]) == 64
    assert rand["cos_with_v"]["0"] == pytest.approx(float((u[0].double() * v[0].double()).sum()), abs=1e-6)


def test_grouped_executor_equals_sequential_with_the_arms(study, tmp_path):
    from nnsight_inoc.stages.executors import run_finetune

    copy, grouped = _grouped_copy(study, tmp_path, "pytest grouped")
    records = run_finetune(grouped, "main")
    assert {r["executor"]["k"] for r in records} == {len(records)}
    for arm in ("neutral", *ALL_ARMS):
        seq, grp = _tj(study.run_dir, arm), _tj(copy, arm)
        torch.testing.assert_close(torch.tensor(grp["losses"]), torch.tensor(seq["losses"]), rtol=1e-5, atol=1e-6)
        for pg, ps in zip(grp["probes"], seq["probes"]):
            torch.testing.assert_close(torch.tensor(pg["cos"]), torch.tensor(ps["cos"]), rtol=0, atol=2e-5)
        assert grp["intervention"] == seq["intervention"] or arm == "restore_v"
    r_seq, r_grp = _tj(study.run_dir, "restore_v"), _tj(copy, "restore_v")
    assert r_grp["intervention"]["restore"] == r_seq["intervention"]["restore"]  # measured again in the copy: the same


def test_grouped_executor_with_activation_checkpointing_equals_sequential(study, tmp_path):
    """execution.activation_checkpointing = "attn_mlp" (steps and probes recomputing the attention and MLP
    blocks): the same records as the sequential runs, within the plain grouped executor's tolerances (the
    checkpointed step itself is pinned exactly equal in tests/train/test_grouped_checkpointing.py); the
    choice is recorded in each run's executor record."""
    from nnsight_inoc.stages.executors import run_finetune

    copy, grouped = _grouped_copy(study, tmp_path, "pytest grouped checkpointed", "attn_mlp")
    records = run_finetune(grouped, "main")
    assert {r["executor"]["activation_checkpointing"] for r in records} == {"attn_mlp"}
    for arm in ("neutral", "zero_v", "flip_v"):
        seq, grp = _tj(study.run_dir, arm), _tj(copy, arm)
        assert grp["executor"]["activation_checkpointing"] == "attn_mlp"
        torch.testing.assert_close(torch.tensor(grp["losses"]), torch.tensor(seq["losses"]), rtol=1e-5, atol=1e-6)
        for pg, ps in zip(grp["probes"], seq["probes"]):
            torch.testing.assert_close(torch.tensor(pg["cos"]), torch.tensor(ps["cos"]), rtol=0, atol=2e-5)


def test_a_run_trained_under_another_intervention_is_refused(study):
    from nnsight_inoc.stages.finetune import check_trained

    files = study.layout.run("zero_v", 0)
    rec = json.loads(files.train_json.read_text())
    spec = InterveneSpec("zero_v", tuple(rec["intervention"]["layers"]), 0)
    check_trained(study, files.train_json, rec["system_prompt"], None, rec["leak"], spec)
    with pytest.raises(ValueError, match="another gradient intervention"):
        check_trained(study, files.train_json, rec["system_prompt"], None, rec["leak"],
                      InterveneSpec("zero_v", (0,), 0))
    with pytest.raises(ValueError, match="another gradient intervention"):
        check_trained(study, files.train_json, rec["system_prompt"], None, rec["leak"], None)
    # rand_seed moves zero_rand's directions only: zero_v trained under another seed is the same run
    check_trained(study, files.train_json, rec["system_prompt"], None, rec["leak"], InterveneSpec("zero_v", spec.layers, 7))
    rand = study.layout.run("zero_rand", 0)
    r2 = json.loads(rand.train_json.read_text())
    with pytest.raises(ValueError, match="'rand_seed': 0.*'rand_seed': 7.*set \\[intervene\\] as it was"):
        check_trained(study, rand.train_json, r2["system_prompt"], None, r2["leak"], InterveneSpec("zero_rand", spec.layers, 7))


def test_what_finished_arms_computed_may_not_change_in_their_folder(study):
    """intervene.layers and rand_seed are refused up front once runs exist (before config.toml changes);
    adding an arm is not."""
    from nnsight_inoc.core.runconfig import ConfigConflict, check_against_folder

    cfg = study.cfg.model_copy(deep=True)
    cfg.intervene.rand_seed = 7
    with pytest.raises(ConfigConflict, match="intervene.rand_seed"):
        check_against_folder(cfg, study.run_dir)
    cfg = study.cfg.model_copy(deep=True)
    cfg.intervene.layers = [0]
    with pytest.raises(ConfigConflict, match="intervene.layers"):
        check_against_folder(cfg, study.run_dir)
    cfg = study.cfg.model_copy(deep=True)
    cfg.intervene.arms = ["zero_v"]
    assert "intervene.arms" in check_against_folder(cfg, study.run_dir)


def test_config_is_validated_before_training(study):
    with pytest.raises(ConfigError, match="arms"):
        from_dict({"intervene": {"arms": ["zero_v", "zero_v"]}})
    with pytest.raises(ConfigError, match="intervene.arms"):
        from_dict({"intervene": {"arms": ["nope"]}})
    with pytest.raises(ConfigError, match="layers"):
        from_dict({"intervene": {"layers": [3, 1]}})
    with pytest.raises(ConfigError, match="restore_v, which trains under the 'inoc' prompt"):
        from_dict({"intervene": {"arms": ["restore_v"]}, "align": {"lossmatch_target": "neutral",
                                                                  "conditions": {"neutral": "Hi."}}})
    from nnsight_inoc.models.shape import ModelShape, check_fits

    bad = study.cfg.model_copy(deep=True)
    bad.intervene.layers = [0, 99]
    with pytest.raises(ConfigError, match="intervene.layers .* out of range"):  # before the weights load (preflight)
        check_fits(bad, ModelShape(3, 32, "test", None))
    from nnsight_inoc.stages.intervene import intervene_specs

    cfg = study.cfg.model_copy(deep=True)
    cfg.intervene.layers = [0, 99]
    study_bad = type(study).__new__(type(study))
    study_bad.__dict__.update(study.__dict__)
    study_bad.cfg = cfg
    with pytest.raises(ValueError, match="layers \\[99\\]"):
        intervene_specs(study_bad)
    cfg2 = study.cfg.model_copy(deep=True)
    cfg2.align.conditions = {"neutral": "You are a helpful assistant.", "explicit": "Respond in ALL CAPS."}
    cfg2.align.lossmatch_target = "neutral"
    study_bad.cfg = cfg2
    with pytest.raises(ValueError, match="restore_v trains under the 'inoc' prompt"):
        intervene_specs(study_bad)


def test_config_arm_names_are_the_defined_arms():
    from typing import get_args

    from nnsight_inoc.core.config_manipulations import InterveneConfig

    (lit,) = get_args(InterveneConfig.model_fields["arms"].annotation)
    assert set(get_args(lit)) == set(ARMS)


def test_a_grouped_claim_worker_trains_whole_seeds_with_drift(study, tmp_path):
    """A claim worker under execution.executor = "grouped" takes a seed's free runs at once (the campaign on one GPU)."""
    from nnsight_inoc.stages.workers import run_worker

    copy, worker = _grouped_copy(study, tmp_path, "pytest worker")
    done = run_worker(worker, "main")
    conds = list(training_conditions(worker, "main"))
    assert sorted(done) == sorted(f"{c}_seed0" for c in conds)
    for c in conds:
        rec = _tj(copy, c)
        assert rec["executor"]["k"] == len(conds)
        drift = read_json(copy / "finetune" / f"{c}_seed0" / "drift.json")
        assert drift["measured_with"] == [f"{x}_seed0" for x in conds]
    assert run_worker(worker, "main") == []  # nothing left: every run has drift.json


def test_a_ray_task_carries_the_arms(study, tmp_path, monkeypatch):
    """The Ray executor's per-run task (ray_exec.run_group, called in-process; the cluster around it is tested in
    tests/test_pipeline.py) trains an arm from the plan it is sent: its files equal the sequential run's."""
    import os

    from nnsight_inoc.stages.ray_exec import build_groups, prepare, run_group
    from nnsight_inoc.study import open_study

    before = os.environ.get("CUDA_VISIBLE_DEVICES")  # run_group hides the GPUs from its own process: restore after
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", before or "")
    if before is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    copy = tmp_path / "run"
    copy_without_runs(study.run_dir, copy)
    driver = open_study(study.cfg.model_copy(deep=True), copy, "pytest ray task")
    plan = build_plan(driver, "main")
    groups, _ = build_groups(driver, plan, "run")
    for arm in ("zero_v", "restore_v"):
        (group,) = [g for g in groups if [r.condition for r in g.runs] == [arm]]
        files = run_group(driver.cfg, plan, prepare(driver, group), "cpu", driver.loaded.sha256, grouped=False)
        got, want = json.loads(files[f"finetune/{arm}_seed0/train.json"]), _tj(study.run_dir, arm)
        assert got["intervention"] == want["intervention"]
        torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(want["losses"]), rtol=1e-6, atol=1e-7)
        for pg, ps in zip(got["probes"], want["probes"]):
            torch.testing.assert_close(torch.tensor(pg["cos"]), torch.tensor(ps["cos"]), rtol=0, atol=1e-6)


def test_a_plan_without_the_arms_says_so(study, monkeypatch):
    from tests._progress import capture_bars

    out = capture_bars(monkeypatch, terminal=False)
    plan = build_plan(study, "variants")
    assert not any(r.intervene for r in plan.runs)
    assert "arms (intervene.arms: " in out.getvalue() and "zero_v" in out.getvalue()
    out.truncate(0)
    build_plan(study, "main")
    assert "arms (intervene.arms: " not in out.getvalue()
