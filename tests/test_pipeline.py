"""End to end on a tiny random Qwen2: extract then align with every control, through the CLI stages.

The numbers mean nothing; the test pins the artifact contract (fixed names, shapes,
row counts, provenance) and that the stages compose.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import torch

from nnsight_inoc.core import layout as A
from nnsight_inoc.core.artifacts import load_torch, read_json, write_json
from tests._paths import ROOT
from tests._ray import require_ray
from tests._study import tiny_study_folder
from tools.compare_runs import compare_runs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from nnsight_inoc.study import open_study

    root = tmp_path_factory.mktemp("pipe")
    cfg, run_dir = tiny_study_folder(root)
    return open_study(cfg, run_dir, "pytest")


def copy_without_runs(run_dir: Path, dest: Path) -> None:
    """The run folder without its finetune runs, stage marks and report: extract, align and the SFT set are kept, so
    another executor can train the same plan into ``dest``."""
    import shutil

    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("finetune", "stages", "report.*"))


def test_extract_then_align_all(study):
    from nnsight_inoc.stages.align import run_align
    from nnsight_inoc.stages.extract import run_extract

    ex = run_extract(study)
    L = study.tlm.n_layers
    assert 0 <= ex["layer"] < L
    assert len(ex["heldout_auroc"]["final_prompt"]) == L
    assert ex["monitoring"]["n_generations"] == 3 * 6
    blob = load_torch(study.run_dir / A.EXTRACT_DIR / A.DIRECTIONS)
    assert blob["v"].shape == (L, 3, study.tlm.d_model)
    torch.testing.assert_close(blob["v"].norm(dim=-1), torch.ones(L, 3))
    for png in ("projection_hist.png", "monitor_scatter.png", "separation_vs_layer.png"):
        assert (study.run_dir / A.EXTRACT_DIR / png).stat().st_size > 1000

    summary = run_align(study, "all")
    conds = set(summary["conditions"])
    assert conds == {"neutral", "inoc", "explicit", "lossmatch"}
    assert "inoc-neutral" in summary["contrasts"] and "inoc-lossmatch" in summary["contrasts"]
    blk = summary["contrasts"]["inoc-neutral"]["final_prompt"]
    assert all(0 < p <= 1 for p in blk["null_p_exact"] + blk["null_p_mc"]) and len(blk["diff_cos"]) == L
    assert len(summary["regression"]["final_prompt/inoc_vs_neutral"]) == L
    lm = read_json(study.run_dir / A.ALIGN_DIR / A.LOSSMATCH)
    assert len(lm["candidates"]) >= 20 and lm["chosen_prompt"] in lm["pool"]
    assert not study.trait.mentions_trait(lm["chosen_prompt"])
    n_ex = summary["conditions"]["neutral"]["n"]
    with gzip.open(study.run_dir / A.ALIGN_DIR / A.ALIGN_ROWS, "rt") as fh:
        n_rows = sum(1 for _ in fh) - 1
    assert n_rows == n_ex * 4 * L * len(summary["positions"])
    prov = json.loads((study.run_dir / A.PROVENANCE).read_text())
    assert {"load_model", "extract", "align_all", "align_summary"} <= set(prov["stages"])
    assert prov["facts"]["model"]["sha256"]


def test_single_condition_reuses_and_matches(study):
    """`align --condition inoc` alone gives the same numbers as inside `--condition all`."""
    from nnsight_inoc.stages.align import run_align

    before = load_torch(study.run_dir / A.ALIGN_DIR / "cond_inoc.pt")
    run_align(study, "inoc")
    after = load_torch(study.run_dir / A.ALIGN_DIR / "cond_inoc.pt")
    torch.testing.assert_close(before["cos"], after["cos"])
    with pytest.raises(ValueError, match="unknown condition"):
        run_align(study, "nope")


def test_example_experiments_run(study, tmp_path):
    """The scripts in experiments/ run against a finished run folder (tiny model)."""
    import importlib.util

    from click.testing import CliRunner

    from nnsight_inoc.core.config import dump_toml

    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(dump_toml(study.cfg))
    for script, extra in (
        ("experiments/projection_by_system_prompt.py", ["--system", "Respond in ALL CAPS.", "--system", "Hi.", "--n", "4"]),
        ("experiments/precision_check.py", ["--n", "4"]),
        ("experiments/scorer_check.py", ["--n", "3", "--tokens", "4"]),
        ("perf/profile_train_step.py", ["--policy", "model", "--warmup", "1", "--steps", "2",
                                   "--out", str(tmp_path / "train_step.json")]),
    ):
        spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        res = CliRunner().invoke(mod.main, ["--run-dir", str(study.run_dir), "--config", str(cfg_path), *extra])
        assert res.exit_code == 0, res.output + repr(res.exception)
    out = json.loads((study.run_dir / "experiments" / "projection_by_system_prompt.json").read_text())
    assert set(out["systems"]) == {"Respond in ALL CAPS.", "Hi."}
    sc = json.loads((study.run_dir / "experiments" / "scorer_check.json").read_text())
    assert sc["n_prompts"] == 3 and set(sc["lengths"]["4"]) >= {"promote", "suppress", "auroc_promote_vs_suppress"}
    ts = json.loads((tmp_path / "train_step.json").read_text())["policies"]["model"]
    assert ts["steps_timed"] == 2 and len(ts["losses"]) == 2 and len(ts["train_step_times_s"]) == 2
    assert 0 <= ts["padding_waste"] < 1 and ts["tokens_per_step_real"] <= ts["tokens_per_step_padded"]
    assert ts["device_profile_train_step"]["kernels_launched"] == 0  # CPU: no device kernels
    res = CliRunner().invoke(mod.main, ["--run-dir", str(study.run_dir), "--config", str(cfg_path), "--policy", "tf32",
                                        "--out", str(tmp_path / "tf32.json")])  # TF32 is refused on CPU, loudly
    assert res.exit_code != 0 and "needs a CUDA device" in str(res.exception)
    pc = json.loads((study.run_dir / "precision_check.json").read_text())
    assert pc["abs_delta_cos_inoc"]["max"] == 0.0  # autocast applies on CUDA only: on CPU both runs are fp32


def test_readme_gradient_cosine_example_runs(study, monkeypatch, capsys):
    """experiments/gradient_cosines_by_prompt.py, the README's ~20-line example, runs as written."""
    import runpy

    monkeypatch.setattr("sys.argv", ["gradient_cosines_by_prompt.py", str(study.run_dir), "Hi.", "Respond in ALL CAPS."])
    runpy.run_path(str(ROOT / "experiments" / "gradient_cosines_by_prompt.py"), run_name="__main__")
    lines = [line for line in capsys.readouterr().out.splitlines() if "cos(-g, v)" in line]
    assert len(lines) == 2 and lines[0].startswith("'Hi.'") and "loss" in lines[1]


def test_sft_completions_cached_by_model_and_data(study, monkeypatch):
    """A second ensure_sft reuses the cache; a different data hash or model would give another key."""
    from nnsight_inoc import study as study_mod

    first = study_mod.ensure_sft(study)
    monkeypatch.setattr(study_mod, "greedy_answers", lambda *a, **k: (_ for _ in ()).throw(AssertionError("regenerated")))
    again = study_mod.ensure_sft(study)
    assert again.completions == first.completions
    assert all(c == study.trait.transform(a) for c, a in zip(first.completions, first.source_answers))
    key = study_mod.sft_key(study)
    run_copy = study.run_dir / A.SFT_COMPLETIONS
    stale = {**read_json(run_copy), "key": "older-key-format"}
    write_json(run_copy, stale)  # a copy left by an older key format is replaced by the data in use
    study_mod.ensure_sft(study)
    assert read_json(run_copy)["key"] == key
    monkeypatch.setattr(study.loaded, "sha256", "0" * 64)
    assert study_mod.sft_key(study) != key


def test_finetune_then_drift_stage(study, monkeypatch):
    """Every main condition x seed is trained once, drift is measured, and the summary correlates them."""
    from nnsight_inoc.stages import executors as F
    from nnsight_inoc.stages.drift import run_drift
    from nnsight_inoc.stages.plan import training_conditions

    assert len(training_conditions(study, "variants")) == len(study.trait.variants) >= 12
    runs = F.run_finetune(study, "main")
    assert {(r["condition"], r["seed"]) for r in runs} == {
        (c, s) for c in ("neutral", "inoc", "explicit", "lossmatch") for s in (0, 1)
    }
    monkeypatch.setattr(F, "train_run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    assert len(F.run_finetune(study, "main")) == 8  # resumed: nothing retrained
    summary = run_drift(study, "main")
    assert summary["n_runs"] == 8 and len(summary["rows"]) == 8
    assert {"align_pre~drift_score", "loss_reduction~drift_proj"} <= set(summary["correlations"])
    neutral_rows = [r for r in summary["rows"] if r["condition"] == "neutral"]
    assert all(r["loss_reduction"] == 0.0 for r in neutral_rows)
    d = read_json(study.run_dir / "finetune" / "inoc_seed0" / "drift.json")
    assert d["neutral_prompt"]["drift"]["mean_score"] == pytest.approx(
        d["neutral_prompt"]["post"]["mean_score"] - d["neutral_prompt"]["pre"]["mean_score"]
    )
    for png in ("projection_shift_vs_layer.png", "trait_pre_post.png", "alignment_vs_drift.png"):
        assert (study.run_dir / "finetune" / png).stat().st_size > 1000


def test_parallel_workers_match_sequential_runs(study, tmp_path):
    """`finetune --gpus 0,0` (shorthand for --executor workers): two worker processes share the runs, each run is done once, and every
    number equals the sequential run's (a run's numerics must not depend on the number of workers)."""
    import os
    import subprocess
    import sys

    from nnsight_inoc.core.config import dump_toml

    copy = tmp_path / "run"
    copy_without_runs(study.run_dir, copy)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(dump_toml(study.cfg))
    env = {k: v for k, v in os.environ.items() if k != "NNSIGHT_INOC_QUIET"}  # CI sets it; the count reads the bars
    proc = subprocess.run([sys.executable, "-m", "nnsight_inoc.cli", "finetune", "--which", "main", "--gpus", "0,0",
                           "--config", str(cfg), "--run-dir", str(copy)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = [(copy / "finetune" / "logs" / f"worker{i}.log").read_text() for i in (0, 1)]
    # each trained run's bar ends with one line in a log file ("finetune <run>: 2/2 done in ...")
    trained = [len(re.findall(r"^finetune \w+_seed\d: 2/2 done in", text, re.M)) for text in logs]
    assert sum(trained) == 8, logs  # 4 conditions x 2 seeds, none trained twice
    assert {json.loads((copy / "finetune" / "claims" / r / "owner.json").read_text())["pid"]
            for r in ("neutral_seed0", "inoc_seed1")}  # claims were made
    same = compare_runs(study.run_dir, copy)  # every train.json and drift.json number and text but wall clock
    assert same["same"] and same["n_runs"] == 8, json.dumps(same)[:3000]
    assert read_json(copy / "finetune" / "finetune_summary.json")["n_runs"] == 8
    assert len(list(copy.glob("provenance.worker*.json"))) == 2


def test_grouped_executor_matches_sequential_runs(study, tmp_path):
    """execution.executor = "grouped": every run of a seed in one pass of the shared base (K = 4 here, the four
    main conditions), equal to the sequential PEFT runs to fp32 round-off; adapters reload in plain PEFT; drift
    measured with the runs' adapters attached together gives the same answers."""

    from peft import PeftModel

    from nnsight_inoc.stages.drift import run_drift
    from nnsight_inoc.stages.executors import run_finetune
    from nnsight_inoc.study import open_study

    copy = tmp_path / "run"
    copy_without_runs(study.run_dir, copy)
    cfg = study.cfg.model_copy(deep=True)
    cfg.execution.executor = "grouped"
    grouped_study = open_study(cfg, copy, "pytest grouped")
    records = run_finetune(grouped_study, "main")
    assert {r["executor"]["k"] for r in records} == {4} and len(records) == 8
    run_drift(grouped_study, "main")
    worst = {"loss": 0.0, "cos": 0.0, "proj": 0.0}
    for cond in ("neutral", "inoc", "explicit", "lossmatch"):
        for seed in (0, 1):
            seq = read_json(study.run_dir / "finetune" / f"{cond}_seed{seed}" / "train.json")
            grp = read_json(copy / "finetune" / f"{cond}_seed{seed}" / "train.json")
            assert grp["step_ids"] == seq["step_ids"] and grp["system_prompt"] == seq["system_prompt"]
            # Measured here (CPU fp32): losses equal, probe cos within 2.2e-7, post projections within 3e-8.
            torch.testing.assert_close(torch.tensor(grp["losses"]), torch.tensor(seq["losses"]), rtol=1e-6, atol=1e-7)
            for pg, ps in zip(grp["probes"], seq["probes"]):
                torch.testing.assert_close(torch.tensor(pg["cos"]), torch.tensor(ps["cos"]), rtol=0, atol=2e-6)
                worst["cos"] = max(worst["cos"], float((torch.tensor(pg["cos"]) - torch.tensor(ps["cos"])).abs().max()))
            worst["loss"] = max(worst["loss"], max(abs(a - b) / abs(b) for a, b in zip(grp["losses"], seq["losses"])))
            dg = read_json(copy / "finetune" / f"{cond}_seed{seed}" / "drift.json")
            ds = read_json(study.run_dir / "finetune" / f"{cond}_seed{seed}" / "drift.json")
            for label in ("neutral_prompt", "training_prompt"):
                assert dg[label]["post"]["answers_head"] == ds[label]["post"]["answers_head"]
                torch.testing.assert_close(torch.tensor(dg[label]["post"]["projection"]),
                                           torch.tensor(ds[label]["post"]["projection"]), rtol=1e-6, atol=1e-6)
                worst["proj"] = max(worst["proj"], float((torch.tensor(dg[label]["post"]["projection"])
                                                          - torch.tensor(ds[label]["post"]["projection"])).abs().max()))
    print(f"grouped vs sequential, largest differences: {worst}")
    base = grouped_study.loaded.hf_model
    peft = PeftModel.from_pretrained(__import__("copy").deepcopy(base), str(copy / "finetune" / "inoc_seed0" / "adapter"))
    assert any("lora_A" in n for n, _ in peft.named_parameters())


@pytest.mark.ray
def test_a_ray_seed_task_trains_its_runs_grouped(study, tmp_path, monkeypatch):
    """`--ray-group seed` (whatever execution.executor says): the task (ray_exec.run_group, called in-process here;
    the cluster around it is tested below) trains its seed's runs K at a time and measures their drift in one
    batched decode; the files it returns equal the sequential runs' to fp32 round-off, as the grouped executor's do."""
    import json
    import os

    from nnsight_inoc.stages.plan import build_plan
    from nnsight_inoc.stages.ray_exec import build_groups, prepare, run_group
    from nnsight_inoc.study import open_study

    # run_group hides the GPUs from its (Ray worker) process for a CPU task; here that process is pytest's, and the
    # NDIF stack started later by test_remote_parity would inherit CUDA_VISIBLE_DEVICES="" (Ray then refuses to start)
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", before or "")  # teardown restores the value, or its absence
    if before is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    copy = tmp_path / "run"
    copy_without_runs(study.run_dir, copy)
    cfg = study.cfg.model_copy(deep=True)  # execution.executor stays "sequential": the grouping alone decides
    driver = open_study(cfg, copy, "pytest ray seed task")
    plan = build_plan(driver, "main")
    groups, _ = build_groups(driver, plan, "seed")
    assert [g.name for g in groups] == ["seed0", "seed1"]
    files = run_group(cfg, plan, prepare(driver, groups[1]), "cpu", driver.loaded.sha256, grouped=True)
    for cond in ("neutral", "inoc", "explicit", "lossmatch"):
        grp = json.loads(files[f"finetune/{cond}_seed1/train.json"])
        seq = read_json(study.run_dir / "finetune" / f"{cond}_seed1" / "train.json")
        assert grp["executor"]["k"] == 4 and grp["step_ids"] == seq["step_ids"]
        torch.testing.assert_close(torch.tensor(grp["losses"]), torch.tensor(seq["losses"]), rtol=1e-6, atol=1e-7)
        for pg, ps in zip(grp["probes"], seq["probes"]):
            torch.testing.assert_close(torch.tensor(pg["cos"]), torch.tensor(ps["cos"]), rtol=0, atol=2e-6)
        dg = json.loads(files[f"finetune/{cond}_seed1/drift.json"])
        ds = read_json(study.run_dir / "finetune" / f"{cond}_seed1" / "drift.json")
        assert dg["measured_with"] == [f"{c}_seed1" for c in ("neutral", "inoc", "explicit", "lossmatch")]
        assert dg["neutral_prompt"]["post"]["answers_head"] == ds["neutral_prompt"]["post"]["answers_head"]


def test_ray_executor_matches_sequential_and_resumes(study, tmp_path):
    """`finetune --executor ray --ray-local-cpus 2`: a local Ray cluster of two worker processes trains and
    measures the runs, the driver writes their files, and every number equals the sequential executor's (the
    claim workers' are compared with the same reference above). A finished run is not run again; a run trained
    but not measured is only measured; a second call with everything done starts no cluster."""
    import os
    import shutil
    import subprocess
    import sys
    import time

    from nnsight_inoc.core.config import dump_toml
    from nnsight_inoc.stages.drift import run_drift
    from nnsight_inoc.stages.executors import run_finetune

    require_ray()
    run_finetune(study, "main")  # the sequential reference: already there when the tests above ran
    run_drift(study, "main")
    ref, copy = study.run_dir / "finetune", tmp_path / "run"
    copy_without_runs(study.run_dir, copy)
    shutil.copytree(ref / "neutral_seed0", copy / "finetune" / "neutral_seed0")  # finished before
    shutil.copytree(ref / "inoc_seed1", copy / "finetune" / "inoc_seed1", ignore=shutil.ignore_patterns("drift.json"))
    kept = {p: p.stat().st_mtime_ns for p in (copy / "finetune" / "neutral_seed0").rglob("*")}
    trained = (copy / "finetune" / "inoc_seed1" / "train.json").read_bytes()
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(dump_toml(study.cfg))
    argv = [sys.executable, "-m", "nnsight_inoc.cli", "finetune", "--which", "main", "--executor", "ray",
            "--ray-local-cpus", "2", "--config", str(cfg), "--run-dir", str(copy)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wall = time.monotonic() - t0
    same = compare_runs(study.run_dir, copy)
    assert same["same"] and same["n_runs"] == 8, json.dumps(same)[:3000]
    stage = read_json(copy / "provenance.json")["stages"]["finetune_ray_main"]
    assert stage["runs_done_before"] == ["neutral_seed0"] and not stage["failed"]
    assert sorted(stage["done"]) == sorted(f"{c}_seed{s}" for c in ("neutral", "inoc", "explicit", "lossmatch")
                                           for s in (0, 1) if (c, s) != ("neutral", 0))
    assert len({w["pid"] for w in stage["workers"].values()}) == 2  # two worker processes, each reused
    assert all(kept[p] == p.stat().st_mtime_ns for p in kept)  # the finished run was left alone
    assert (copy / "finetune" / "inoc_seed1" / "train.json").read_bytes() == trained  # only measured
    assert not [p for p in stage["cluster"]["pids"] if Path(f"/proc/{p}").exists()]  # stopped by PID
    assert read_json(copy / "finetune" / "finetune_summary.json")["n_runs"] == 8
    again = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "all 8 runs of 'main' are done" in again.stdout + again.stderr
    print(f"ray executor: {wall:.0f} s for 7 runs on 2 worker processes (cluster start included)")


def test_run_all_reuses_unchanged_stages(study, monkeypatch):
    """A second `run` redoes nothing; a config change invalidates the stage and everything after it."""
    from nnsight_inoc import pipeline as S

    fp0 = S.fingerprints(study)
    for name in ("extract", "align"):  # done by the tests above with this config; the smoke test covers a full run
        S.mark_done(study.run_dir, name, fp0[name], 0.0)
    md = S.run_all(study)  # finetune/drift resume their finished runs, then the report is written
    assert md.is_file() and (study.run_dir / "report.html").is_file()
    for name in ("run_extract", "run_align", "run_finetune", "run_drift"):
        monkeypatch.setattr(S, name, lambda *a, **k: (_ for _ in ()).throw(AssertionError("stage rerun")))
    S.run_all(study)  # everything reused
    fp = S.fingerprints(study)
    assert all(S.is_current(study.run_dir, n, fp[n]) for n in ("extract", "align", "finetune", "drift"))
    changed = study.cfg.model_copy(deep=True)
    changed.extract.max_new_tokens += 1
    monkeypatch.setattr(study, "cfg", changed)
    fp2 = S.fingerprints(study)
    assert all(fp2[n] != fp[n] for n in ("extract", "align", "finetune", "drift"))
    with pytest.raises(ValueError, match="other inputs or config"):
        S._check_resumable(study.run_dir, "finetune", fp2["finetune"])


def test_worker_retrains_a_published_run_that_lost_its_drift(study, tmp_path):
    """A run folder with train.json but neither its adapter nor drift.json (published between training and drift,
    as happened on the GPU) is trained again by a worker, to the same numbers; a complete run is left alone."""
    import shutil

    from nnsight_inoc.core.layout import RunFiles
    from nnsight_inoc.stages.finetune import needs_training
    from nnsight_inoc.stages.workers import run_worker
    from nnsight_inoc.study import open_study

    copy = tmp_path / "run"
    shutil.copytree(study.run_dir, copy, ignore=shutil.ignore_patterns("stages", "report.*", "claims"))
    lost, kept = copy / "finetune" / "neutral_seed0", copy / "finetune" / "inoc_seed0"
    shutil.rmtree(lost / "adapter")
    (lost / "drift.json").unlink()
    shutil.rmtree(kept / "adapter")  # published: no adapter, but drift.json is there
    before_kept = (kept / "train.json").read_text()
    assert needs_training(RunFiles(lost)) and not needs_training(RunFiles(kept))
    done = run_worker(open_study(study.cfg, copy, "pytest worker"), "main", only_seeds=[0])
    assert done == ["neutral_seed0"]
    seq = read_json(study.run_dir / "finetune" / "neutral_seed0" / "train.json")
    again = read_json(lost / "train.json")
    assert again["losses"] == seq["losses"] and again["probes"] == seq["probes"]
    assert read_json(lost / "drift.json")["neutral_prompt"] == read_json(
        study.run_dir / "finetune" / "neutral_seed0" / "drift.json")["neutral_prompt"]
    assert (kept / "train.json").read_text() == before_kept and not (kept / "adapter").exists()
