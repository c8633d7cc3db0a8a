"""The Ray executor's driver side without Ray: options, per-task resources, which runs become tasks, what they carry.

The executor end to end (a local Ray cluster, numbers equal to the other executors') is
``tests/test_pipeline.py::test_ray_executor_matches_sequential_and_resumes``.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

from nnsight_inoc.core.config import from_dict
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec
from nnsight_inoc.stages.ray_exec import RayOptions, build_groups, prepare, task_resources


def _study(tmp_path, device: str = "auto"):
    cfg = from_dict({"model": {"device": device}, "finetune": {"seeds": [0, 1]}}, source="test")
    return SimpleNamespace(cfg=cfg, layout=RunLayout(tmp_path), run_dir=tmp_path,
                           loaded=SimpleNamespace(hf_model=torch.nn.Linear(10, 10)))  # 110 float32 weights


def _plan(runs: list[RunSpec]) -> FinetunePlan:
    return FinetunePlan(which="main", v=torch.zeros(1, 1), layer=0, sft=None, drift_prompts=[], neutral_prompt="n",
                        runs=runs)


def _trained(study, run: RunSpec, adapter: bool, drift: bool) -> None:
    files = study.layout.run(run.condition, run.seed)
    files.folder.mkdir(parents=True)
    (files.train_json).write_text(json.dumps({"finetune_config": study.cfg.finetune.model_dump(),
                                              "system_prompt": run.system_prompt, "steering": None}))
    if adapter:
        files.adapter.mkdir()
        (files.adapter / "adapter_model.safetensors").write_bytes(b"weights")
    if drift:
        files.drift_json.write_text("{}")


def test_options_need_exactly_one_cluster():
    with pytest.raises(ValueError, match="exactly one"):
        RayOptions()
    with pytest.raises(ValueError, match="exactly one"):
        RayOptions(address="auto", local_cpus=2)
    with pytest.raises(ValueError, match="distinct"):
        RayOptions(local_gpus=(0, 0))
    with pytest.raises(ValueError, match="grouping"):
        RayOptions(local_cpus=2, grouping="condition")
    assert RayOptions(address="10.0.0.1:6379").address == "10.0.0.1:6379"


def test_task_resources_follow_the_device_and_the_cluster(tmp_path):
    gpu, cpu = _study(tmp_path), _study(tmp_path, "cpu")
    assert task_resources(gpu, RayOptions(address="auto")) == (1.0, 1.0, None, "auto")  # resolved on the worker
    assert task_resources(_study(tmp_path, "cuda:0"), RayOptions(address="auto"))[3] == "cuda"  # its own GPU
    assert task_resources(gpu, RayOptions(local_cpus=2)) == (0.0, 1.0, 3 * 110 * 4, "cpu")  # 3x the weights
    assert task_resources(cpu, RayOptions(address="auto", memory_gb=2)) == (0.0, 1.0, 2_000_000_000, "cpu")
    gpus, cpus, _, _ = task_resources(gpu, RayOptions(local_gpus=(0, 1), gpus_per_task=0.5))
    assert gpus == 0.5 and cpus >= 1  # the host's cores shared by the 4 runs that fit
    with pytest.raises(ValueError, match="asks for GPUs"):
        task_resources(cpu, RayOptions(address="auto", gpus_per_task=1))
    with pytest.raises(ValueError, match="get no GPU"):
        task_resources(_study(tmp_path, "cuda"), RayOptions(local_cpus=2))


def test_groups_skip_done_runs_and_measure_trained_ones(tmp_path):
    study = _study(tmp_path)
    runs = [RunSpec(c, s, f"{c} prompt") for c in ("neutral", "inoc") for s in (0, 1)]
    _trained(study, runs[0], adapter=False, drift=True)   # neutral_seed0: done (published: no adapter)
    _trained(study, runs[2], adapter=True, drift=False)   # inoc_seed0: trained, drift to come
    _trained(study, runs[3], adapter=False, drift=False)  # inoc_seed1: lost its adapter before drift: train again
    groups, done = build_groups(study, _plan(runs), "run")
    assert done == ["neutral_seed0"]
    assert [g.name for g in groups] == ["inoc_seed0", "neutral_seed1", "inoc_seed1"]  # seed-major
    by = {g.name: g for g in groups}
    assert by["inoc_seed0"].markers == ("finetune/inoc_seed0/drift.json",)
    assert by["inoc_seed1"].markers == ("finetune/inoc_seed1/train.json", "finetune/inoc_seed1/drift.json")
    seeds, _ = build_groups(study, _plan(runs), "seed")
    assert [(g.name, [r.name for r in g.runs]) for g in seeds] == [("seed0", ["inoc_seed0"]),
                                                                  ("seed1", ["neutral_seed1", "inoc_seed1"])]
    assert seeds[1].markers == ("finetune/neutral_seed1/train.json", "finetune/inoc_seed1/train.json",
                                "finetune/neutral_seed1/drift.json", "finetune/inoc_seed1/drift.json")
    (study.layout.pre_dir).mkdir(parents=True)
    study.layout.pre_behaviour("abc").write_text('{"system": "n"}')
    given = prepare(study, by["inoc_seed0"]).given
    assert set(given) == {"finetune/pre/abc.json", "finetune/inoc_seed0/train.json",
                          "finetune/inoc_seed0/adapter/adapter_model.safetensors"}
    assert set(prepare(study, by["inoc_seed1"]).given) == {"finetune/pre/abc.json"}  # trained afresh: no old files


def test_a_run_trained_with_another_config_is_refused(tmp_path):
    study = _study(tmp_path)
    run = RunSpec("inoc", 0, "inoc prompt")
    _trained(study, run, adapter=True, drift=True)
    other = RunSpec("inoc", 0, "another prompt")
    with pytest.raises(ValueError, match="another config or prompt"):
        build_groups(study, _plan([other]), "run")


def test_cli_refuses_ray_flags_without_the_ray_executor_and_env_address_yields_to_a_local_cluster():
    from click.testing import CliRunner

    from nnsight_inoc.cli import main

    res = CliRunner().invoke(main, ["finetune", "--ray-local-gpus", "0,1", "--preset", "smoke"])
    assert res.exit_code == 2 and "--ray-local-gpus is an option of --executor ray" in res.output
    flags = {"ray_address": "10.0.0.1:6379", "ray_local_gpus": [0, 1], "ray_local_cpus": None,
             "ray_gpus_per_task": None, "ray_cpus_per_task": None, "ray_memory_gb": None, "ray_retries": 2,
             "ray_group": "seed", "ray_in_flight": None}
    opts = RayOptions.from_flags(flags, address_from_env=True)
    assert opts.address is None and opts.local_gpus == (0, 1) and opts.grouping == "seed"
    with pytest.raises(ValueError, match="exactly one"):  # both given on the command line: refused, not chosen
        RayOptions.from_flags(flags, address_from_env=False)


def test_scratch_folders_of_dead_task_processes_are_removed(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from nnsight_inoc.stages import ray_exec

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"nnsight_inoc_task_{dead.pid}_abc").mkdir()
    (tmp_path / f"nnsight_inoc_task_{os.getpid()}_def").mkdir()  # a live process's: kept
    (tmp_path / "nnsight_inoc_task_x").mkdir()  # not ours by name: kept
    ray_exec._remove_orphans()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"nnsight_inoc_task_{os.getpid()}_def", "nnsight_inoc_task_x"]


def test_a_gpu_task_that_sees_no_cuda_is_refused_unless_rehearsing(monkeypatch):
    import torch

    from nnsight_inoc.stages.ray_exec import CPU_REHEARSAL_ENV, _check_auto_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(CPU_REHEARSAL_ENV, raising=False)
    with pytest.raises(RuntimeError, match="refusing to train it on the CPU"):
        _check_auto_device("neutral_seed0")
    monkeypatch.setenv(CPU_REHEARSAL_ENV, "1")
    _check_auto_device("neutral_seed0")  # the rehearsal: logged, not refused
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(CPU_REHEARSAL_ENV)
    _check_auto_device("neutral_seed0")
