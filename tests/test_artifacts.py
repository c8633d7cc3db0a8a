"""Provenance keeps every invocation; atomic writes leave no partial file."""

from __future__ import annotations

import json

from nnsight_inoc import artifacts as A


def test_provenance_keeps_earlier_invocations(tmp_path):
    first = A.Provenance(tmp_path, "seed = 0\n", "python cli.py align --condition all")
    first.stage("align_all", 12.0)
    older = json.loads((tmp_path / A.PROVENANCE).read_text())
    older.pop("invocations")  # a file written before invocations were recorded
    older["device"] = {"cuda_device": "NVIDIA H200"}
    (tmp_path / A.PROVENANCE).write_text(json.dumps(older))
    later = A.Provenance(tmp_path, "seed = 0\n", "python cli.py drift --summary-only")
    data = json.loads((tmp_path / A.PROVENANCE).read_text())
    assert [i["command"] for i in data["invocations"]] == ["python cli.py align --condition all",
                                                             "python cli.py drift --summary-only"]
    assert data["invocations"][0]["device"] == {"cuda_device": "NVIDIA H200"}
    assert data["stages"]["align_all"]["seconds"] == 12.0 and data["command"] == "python cli.py drift --summary-only"
    A.Provenance(tmp_path, "seed = 0\n", "python cli.py report")
    assert len(json.loads((tmp_path / A.PROVENANCE).read_text())["invocations"]) == 3
    assert later.path == tmp_path / A.PROVENANCE


def test_worker_provenance_has_its_own_file(tmp_path):
    A.Provenance(tmp_path, "seed = 0\n", "main")
    A.Provenance(tmp_path, "seed = 0\n", "worker", "provenance.worker3.json")
    assert json.loads((tmp_path / A.PROVENANCE).read_text())["command"] == "main"
    assert json.loads((tmp_path / "provenance.worker3.json").read_text())["command"] == "worker"
