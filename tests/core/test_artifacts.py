"""Provenance keeps every invocation; atomic writes leave no partial file."""

from __future__ import annotations

import json
from pathlib import Path

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.layout import PROVENANCE, RunLayout


def _prov(run_dir, command: str) -> A.Provenance:
    layout = RunLayout(run_dir)
    return A.Provenance(layout.provenance, command)


def test_provenance_keeps_earlier_invocations(tmp_path):
    first = _prov(tmp_path, "python cli.py align --condition all")
    first.stage("align_all", 12.0)
    older = json.loads((tmp_path / PROVENANCE).read_text())
    older.pop("invocations")  # a file written before invocations were recorded
    older["device"] = {"cuda_device": "NVIDIA H200"}
    (tmp_path / PROVENANCE).write_text(json.dumps(older))
    later = _prov(tmp_path, "python cli.py drift --summary-only")
    data = json.loads((tmp_path / PROVENANCE).read_text())
    assert [i["command"] for i in data["invocations"]] == ["python cli.py align --condition all",
                                                             "python cli.py drift --summary-only"]
    assert data["invocations"][0]["device"] == {"cuda_device": "NVIDIA H200"}
    assert data["stages"]["align_all"]["seconds"] == 12.0 and data["command"] == "python cli.py drift --summary-only"
    _prov(tmp_path, "python cli.py report")
    assert len(json.loads((tmp_path / PROVENANCE).read_text())["invocations"]) == 3
    assert later.path == tmp_path / PROVENANCE


def test_worker_provenance_has_its_own_file(tmp_path):
    _prov(tmp_path, "main")
    A.Provenance(RunLayout(tmp_path).worker_provenance("3"), "worker")
    assert json.loads((tmp_path / PROVENANCE).read_text())["command"] == "main"
    assert json.loads((tmp_path / "provenance.worker3.json").read_text())["command"] == "worker"


def _append(path: str, label: str, n: int) -> None:
    prov = A.Provenance(Path(path), label)
    for j in range(n):
        prov.stage(f"{label}_{j}", 0.1)
        prov.fact(f"{label}_fact", j)


def test_concurrent_writers_lose_no_record(tmp_path):
    """Four processes append to one provenance file at once: every invocation, stage and fact survives."""
    import multiprocessing

    path = RunLayout(tmp_path).provenance
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append, args=(str(path), f"p{i}", 15)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    data = json.loads(path.read_text())
    assert sorted(i["command"] for i in data["invocations"]) == ["p0", "p1", "p2", "p3"]
    assert len(data["stages"]) == 60 and all(data["facts"][f"p{i}_fact"] == 14 for i in range(4))


def test_two_open_provenances_of_one_file_keep_both(tmp_path):
    """The lost-invocation case seen with two commands on one run folder: both open, then both save."""
    path = RunLayout(tmp_path).provenance
    first, second = A.Provenance(path, "first"), A.Provenance(path, "second")
    first.stage("extract", 1.0)
    second.stage("align_all", 2.0)
    data = json.loads(path.read_text())
    assert [i["command"] for i in data["invocations"]] == ["first", "second"]
    assert set(data["stages"]) == {"extract", "align_all"}


def test_provenance_records_config_sources_and_changes(tmp_path):
    sources = {"preset": "smoke", "config_file": {"path": "/x/my.toml", "sha256": "0" * 64}, "flags": {"seed": 3}}
    A.Provenance(RunLayout(tmp_path).provenance, "cmd", sources=sources, config_changes={"seed": (0, 3)})
    inv = json.loads(RunLayout(tmp_path).provenance.read_text())["invocations"][-1]
    assert inv["config_sources"] == sources and inv["config_changes"] == {"seed": [0, 3]}


def test_git_info_names_this_checkouts_commit_or_the_callers(monkeypatch):
    """The commit is the repository's (not a parent folder's), and a caller-given one wins (GPU copies)."""
    import subprocess

    from nnsight_inoc.core.artifacts import git_info
    from tests._paths import ROOT

    monkeypatch.delenv("NNSIGHT_INOC_GIT_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert git_info()["commit"] == head.stdout.strip()
    monkeypatch.setenv("NNSIGHT_INOC_GIT_COMMIT", "abc123")
    assert git_info() == {"commit": "abc123", "dirty": None, "source": "NNSIGHT_INOC_GIT_COMMIT"}


def test_folder_written_atomically_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    import pytest

    target = tmp_path / "adapter"
    with A.folder_written_atomically(target) as tmp:
        (tmp / "w").write_text("1")
    assert (target / "w").read_text() == "1"
    with pytest.raises(RuntimeError), A.folder_written_atomically(target) as tmp:
        (tmp / "w").write_text("half")
        raise RuntimeError("crash mid-write")
    assert (target / "w").read_text() == "1"  # the old folder is kept whole
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # and no temp folder is left behind
    with A.folder_written_atomically(target) as tmp:
        (tmp / "v").write_text("2")
    assert [p.name for p in target.iterdir()] == ["v"]  # replaced, not merged
