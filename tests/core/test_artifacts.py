"""Provenance keeps every invocation; atomic writes leave no partial file."""

from __future__ import annotations

import json

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.layout import PROVENANCE, RunLayout


def _prov(run_dir, command: str) -> A.Provenance:
    layout = RunLayout(run_dir)
    return A.Provenance(layout.provenance, layout.config, "seed = 0\n", command)


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
    A.Provenance(RunLayout(tmp_path).worker_provenance("3"), RunLayout(tmp_path).config, "seed = 0\n", "worker")
    assert json.loads((tmp_path / PROVENANCE).read_text())["command"] == "main"
    assert json.loads((tmp_path / "provenance.worker3.json").read_text())["command"] == "worker"


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
