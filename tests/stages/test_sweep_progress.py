"""The finetune and drift stages show one bar per run (the loss in it) and one overall bar, not a line per step."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from nnsight_inoc.core import progress as P
from nnsight_inoc.core.config import from_dict
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.stages import drift as D
from nnsight_inoc.stages import executors as E
from nnsight_inoc.stages.finetune import train_run
from nnsight_inoc.stages.plan import RunSpec
from nnsight_inoc.study import SFTSet
from tests._plans import plan_of
from tests._progress import capture_bars
from tests._tiny import save_tiny_checkpoint


@pytest.fixture
def logfile(monkeypatch):
    return capture_bars(monkeypatch, terminal=False)


def test_training_shows_one_bar_per_run_with_its_loss(tmp_path, logfile):
    from nnsight_inoc.study import open_study

    folder = save_tiny_checkpoint(tmp_path / "tiny")
    cfg = from_dict({"model": {"name": str(folder), "device": "cpu"}, "align": {"batch_size": 2},
                     "finetune": {"steps": 3, "batch_size": 2, "n_probe": 2, "probe_every": 1,
                                  "target_modules": ["q_proj"]}}, source="test")
    study = open_study(cfg, tmp_path / "run", "pytest")
    prompts = [f"Write about the sea number {i}" for i in range(4)]
    sft = SFTSet([f"s{i}" for i in range(4)], prompts, ["The sea."] * 4, ["THE SEA."] * 4, {})
    v = torch.nn.functional.normalize(torch.randn(study.tlm.n_layers, study.tlm.d_model), dim=-1)
    runs = [RunSpec("neutral", 0, "You are a helpful assistant."), RunSpec("inoc", 0, "You always capitalise.")]
    plan = plan_of(study, sft, v, runs)
    logfile.truncate(0)
    with P.task("finetune sweep (main)", len(runs)) as sweep:
        for run in runs:
            rec = train_run(study, plan, run, dest=RunLayout(tmp_path / "out"))
            sweep(1)
    lines = logfile.getvalue().splitlines()
    assert not [line for line in lines if re.search(r"step \d+: probe", line)]  # the old line per probe step
    done = [line for line in lines if " done in " in line]
    assert len(done) == 3 and done[-1].startswith("finetune sweep (main): 2/2")
    assert done[1].startswith("finetune inoc_seed0: 3/3")
    assert done[1].endswith(f"; loss {rec['losses'][-1]:.4f}, probe loss {rec['probes'][-1]['loss']:.4f} (step 3)")


def test_finetune_and_drift_sweeps_have_one_overall_bar(monkeypatch, logfile):
    runs = [RunSpec("neutral", s, "N.") for s in (0, 1, 2)]
    plan = SimpleNamespace(runs=runs)
    monkeypatch.setattr(E, "build_plan", lambda *a, **k: plan)
    monkeypatch.setattr(E, "execute_run", lambda *a, **k: {})
    monkeypatch.setattr(D, "build_plan", lambda *a, **k: plan)
    monkeypatch.setattr(D, "drift_run", lambda *a, **k: {})
    monkeypatch.setattr(D, "summarise_drift", lambda *a, **k: {})
    study = SimpleNamespace(prov=SimpleNamespace(stage=lambda *a, **k: None),
                            cfg=SimpleNamespace(execution=SimpleNamespace(executor="sequential")))
    E.run_finetune(study, "main")
    D.run_drift(study, "main")
    done = [line.split(" done in ")[0] for line in logfile.getvalue().splitlines() if " done in " in line]
    assert done == ["finetune sweep (main): 3/3", "drift sweep (main): 3/3"]
