"""The GPU campaign's pure parts: how many workers fit on a card, and what the bundles leave out."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

import pytest

from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location("campaign", ROOT / "gpu" / "campaign.py")
campaign = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(campaign)


def test_workers_per_gpu_fits_memory():
    assert campaign.workers_per_gpu(143771) == 2  # H200: two fp32 workers peaked at 98 GB
    assert campaign.workers_per_gpu(81559) == 1  # H100 80 GB: one
    assert campaign.workers_per_gpu(16000) == 1  # never zero
    assert campaign.workers_per_gpu(81559, "3") == 3
    with pytest.raises(ValueError):
        campaign.workers_per_gpu(81559, "0")


@pytest.mark.parametrize("name, kept", [
    ("allcaps/finetune/inoc_seed0/train.json", True),
    ("allcaps/finetune/inoc_seed0/adapter/adapter_model.safetensors", False),
    ("allcaps/finetune/inoc_seed0/.adapter.x1/adapter_config.json", False),
    ("allcaps/finetune/claims/inoc_seed0/owner.json", False),
    ("allcaps/.lock/lock", False),
    ("spanish/align/cond_inoc.pt", False),
    ("spanish/extract/directions.pt", True),
    ("spanish/align/rows.csv.gz", True),
])
def test_bundle_filter(name, kept):
    assert (campaign.keep(tarfile.TarInfo(name)) is not None) == kept


def test_job_specs_carry_optional_seed_lists(monkeypatch):
    monkeypatch.setenv("CAMPAIGN_JOBS", "allcaps:variants,allcaps:steering:0,politeness:main,allcaps:steering:1+2")
    monkeypatch.setenv("CAMPAIGN_PREP", "")
    spec = importlib.util.spec_from_file_location("campaign2", Path(campaign.__file__))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.JOBS == [("allcaps", "variants"), ("allcaps", "steering", "0"), ("politeness", "main"),
                        ("allcaps", "steering", "1+2")]
    assert [p for p in mod.PREP if p] == []


def test_bench_lane_writes_each_entry_to_its_own_folder():
    for name, (argv, out_opt) in campaign.BENCHES.items():
        assert argv[0] in ("cli.py", "perf/profile_trace.py", "perf/profile_train_step.py"), name
        assert (Path(campaign.__file__).resolve().parent.parent / argv[0]).is_file()
        assert out_opt == ("--out" if argv[0].startswith("perf/") else "--out-dir"), name


def test_threads_per_process_shares_the_cores():
    assert campaign.threads_per_process(64, 5) == 12  # 4 H100 workers + the bench lane
    assert campaign.threads_per_process(64, 9) == 7  # 8 H200 workers + the bench lane
    assert campaign.threads_per_process(4, 9) == 1  # never zero
    with pytest.raises(ValueError):
        campaign.threads_per_process(64, 0)


def test_derived_studies_copy_the_source_run_folder_without_its_runs(tmp_path, monkeypatch):
    """allcaps_tf32 / allcaps_rerun retrain from the source's extract, align and SFT completions only."""
    src = tmp_path / "repo"
    for item in ("nnsight_inoc", "gpu", "experiments"):
        (src / item).mkdir(parents=True)
    (src / "cli.py").write_text("")
    run = src / campaign.STUDIES["allcaps"][1]
    for f in ("extract/extract_summary.json", "align/lossmatch.json", "sft_completions.json", "provenance.json",
              "provenance.workerg0w0.json", "finetune/inoc_seed0/train.json", "finetune/pre/abc.json",
              "finetune/finetune_summary.json"):
        (run / f).parent.mkdir(parents=True, exist_ok=True)
        (run / f).write_text("{}")
    root = tmp_path / "campaign"
    monkeypatch.chdir(src)
    for k, v in {"ROOT": root, "CODE": root / "code", "RUNS": root / "runs", "LOGS": root / "logs"}.items():
        monkeypatch.setattr(campaign, k, v)
    campaign.setup()
    assert (root / "runs/allcaps/finetune/inoc_seed0/train.json").is_file()
    for d in campaign.DERIVED:
        got = sorted(str(p.relative_to(root / "runs" / d)) for p in (root / "runs" / d).rglob("*") if p.is_file())
        assert got == ["align/lossmatch.json", "extract/extract_summary.json", "finetune/pre/abc.json",
                       "provenance.json", "sft_completions.json"], d
        assert campaign.STUDIES[d][0].startswith("gpu/") and (Path(campaign.__file__).parent.parent
                                                              / campaign.STUDIES[d][0]).is_file()


def test_prep_runs_transfer_only_where_the_config_enables_it(tmp_path, monkeypatch):
    """Issue 16's transfer is a pre-training stage: prep runs extract, align, then transfer if `[transfer] enabled`,
    and skips each stage whose output exists (a resumed campaign redoes nothing)."""
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(campaign, "sh", lambda argv, gpu, log, worker="": calls.append((argv[2], argv)) or 0)
    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(campaign, "CODE", ROOT)
    monkeypatch.setitem(campaign.STUDIES, "clock", ("gpu/allcaps_clock_gpu.toml", "x"))
    for study in ("allcaps", "clock"):
        (tmp_path / "runs" / study).mkdir(parents=True)
        campaign.prep(study, 0)
    assert [(c, a[a.index("--config") + 1]) for c, a in calls] == [
        ("extract", "gpu/allcaps_gpu.toml"), ("align", "gpu/allcaps_gpu.toml"), ("transfer", "gpu/allcaps_gpu.toml"),
        ("extract", "gpu/allcaps_clock_gpu.toml"), ("align", "gpu/allcaps_clock_gpu.toml")]
    assert (tmp_path / "runs" / "allcaps" / ".prep_done").exists()

    calls.clear()
    run = tmp_path / "runs" / "resumed"
    monkeypatch.setitem(campaign.STUDIES, "resumed", ("gpu/allcaps_gpu.toml", "x"))
    for f in ("extract/extract_summary.json", "align/align_summary.json"):
        (run / f).parent.mkdir(parents=True, exist_ok=True)
        (run / f).write_text("{}")
    campaign.prep("resumed", 0)
    assert [c for c, _ in calls] == ["transfer"]


def test_decisive_studies_have_their_configs_and_folders_and_can_be_selected(monkeypatch):
    """Issue 23: the decisive sweep's studies load with the arms and the grouped executor; CAMPAIGN_STUDIES restricts
    what is set up and bundled (a device call returns at most 8 files)."""
    from nnsight_inoc.core.config import load_config

    root = Path(campaign.__file__).parent.parent
    for t in ("allcaps", "spanish"):
        cfg_path, folder = campaign.STUDIES[f"decisive_{t}"]
        cfg = load_config(root / cfg_path)
        assert cfg.trait.name == t and cfg.intervene.arms == ["zero_v", "zero_rand", "flip_v", "restore_v"]
        assert cfg.execution.executor == "grouped" and cfg.leak.targets == ["inoc"] and cfg.finetune.which == "main"
        assert folder == f"artifacts/decisive_{t}_{campaign.MODEL}"
    monkeypatch.setenv("CAMPAIGN_STUDIES", "decisive_allcaps")
    spec = importlib.util.spec_from_file_location("campaign_selected", ROOT / "gpu" / "campaign.py")
    selected = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(selected)
    assert list(selected.STUDIES) == ["decisive_allcaps"]


def test_continuation_refuses_other_data_or_config(tmp_path, monkeypatch):
    """Issue 23: a folder with finished runs continues only under the same splits and config."""
    from nnsight_inoc.core.config import dump_toml, load_config
    from tests._study import tiny_study_folder

    cfg, run = tiny_study_folder(tmp_path)
    root = tmp_path / "campaign"
    (root / "code" / "gpu").mkdir(parents=True)
    (root / "code" / "gpu" / "s.toml").write_text(dump_toml(cfg))
    (root / "runs").mkdir()
    import shutil

    shutil.copytree(run, root / "runs" / "s")
    (root / "runs" / "s" / "config.toml").write_text(dump_toml(cfg))
    (root / "runs" / "s" / "finetune" / "neutral_seed0").mkdir(parents=True)
    (root / "runs" / "s" / "finetune" / "neutral_seed0" / "train.json").write_text("{}")
    (root / "runs" / "s" / "finetune" / "neutral_seed0" / "drift.json").write_text("{}")
    monkeypatch.setattr(campaign, "STUDIES", {"s": ("gpu/s.toml", "x")})
    monkeypatch.setattr(campaign, "RUNS", root / "runs")
    monkeypatch.setattr(campaign, "CODE", root / "code")
    lines = campaign.check_continuation()
    assert len(lines) == 1 and "continuing 1 finished runs" in lines[0]
    other = load_config(root / "code" / "gpu" / "s.toml")
    other.finetune.lr = 0.5
    (root / "code" / "gpu" / "s.toml").write_text(dump_toml(other))
    with pytest.raises(SystemExit, match="finetune.lr"):
        campaign.check_continuation()
    (root / "code" / "gpu" / "s.toml").write_text(dump_toml(cfg))
    splits = root / "runs" / "s" / "data" / "splits.json"
    splits.write_text(splits.read_text().replace("Write about", "Write abut", 1))
    with pytest.raises(SystemExit, match="s: will not continue"):
        campaign.check_continuation()


def test_transfer_after_the_jobs_leaves_prep_to_extract_and_align(tmp_path, monkeypatch):
    """CAMPAIGN_TRANSFER=after: prep runs extract and align only; transfer() then runs the stage once, and not again."""
    calls: list[str] = []
    monkeypatch.setattr(campaign, "sh", lambda argv, gpu, log, worker="": calls.append(argv[2]) or 0)
    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(campaign, "CODE", ROOT)
    monkeypatch.setattr(campaign, "TRANSFER_IN_PREP", False)
    (tmp_path / "runs" / "allcaps").mkdir(parents=True)
    campaign.prep("allcaps", 0)
    assert calls == ["extract", "align"]
    assert campaign.transfer("allcaps", 0) and calls == ["extract", "align", "transfer"]
    (tmp_path / "runs" / "allcaps" / "transfer").mkdir()
    (tmp_path / "runs" / "allcaps" / "transfer" / "transfer.json").write_text("{}")
    assert campaign.transfer("allcaps", 0) and calls == ["extract", "align", "transfer"]


def test_next_phase_waits_for_the_finished_marker_and_no_live_supervisor(monkeypatch, tmp_path):
    import os

    monkeypatch.setattr(campaign, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="no phase has finished"):
        campaign.next_phase()
    (tmp_path / "supervisor.pid").write_text(str(os.getpid()))  # a live process stands in for the supervisor
    (tmp_path / "finished").touch()
    with pytest.raises(SystemExit, match="still running"):
        campaign.next_phase()
    (tmp_path / "supervisor.pid").write_text("999999999")
    campaign.next_phase()
    assert not (tmp_path / "finished").exists()
