"""gpu/install_wheels.py: only missing or too old requirements are installed, from the wheels at hand."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location("install_wheels", ROOT / "gpu" / "install_wheels.py")
iw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(iw)


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\n" + f"Name: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_wheel_requirements_drop_extras(tmp_path):
    w = _wheel(tmp_path, "ray", "2.60.0", ["click>=7.0", "msgpack<2.0.0,>=1.0.0", 'aiohttp; extra == "default"'])
    assert [str(r) for r in iw.wheel_requirements(w)] == ["click>=7.0", "msgpack<2.0.0,>=1.0.0"]


def test_plan_installs_only_what_is_missing_or_too_old(tmp_path):
    w = {n: _wheel(tmp_path, n, v, r) for n, v, r in [
        ("ray", "2.60.0", ["click>=7.0", "packaging>=24.2", "jsonschema"]),
        ("click", "8.5.1", []), ("packaging", "26.4", []),
        ("jsonschema", "4.26.0", ["attrs>=22.2.0", "referencing>=0.28.4"]),
        ("attrs", "26.1.0", []), ("referencing", "0.37.0", ["attrs>=22.2.0"])]}
    wheels = {n: [(Version(p.name.split("-")[1]), p)] for n, p in w.items()}
    have = {"click": Version("8.1.7"), "packaging": Version("23.2"), "attrs": Version("23.1.0")}
    todo = iw.plan("ray==2.60.0", wheels, have.get, iw.wheel_requirements)
    assert [p.name.split("-")[0] for p in todo] == ["ray", "packaging", "jsonschema", "referencing"]
    assert iw.plan("ray==2.60.0", wheels, {**have, "ray": Version("2.60.0")}.get, iw.wheel_requirements) == []
    with pytest.raises(SystemExit, match="no wheel"):
        iw.plan("ray==2.60.0", {"ray": wheels["ray"]}, {}.get, iw.wheel_requirements)


def test_plan_refuses_conflicting_requirements(tmp_path):
    a = _wheel(tmp_path, "a", "1.0", ["b==1.0", "c"])
    c = _wheel(tmp_path, "c", "1.0", ["b==2.0"])
    b = _wheel(tmp_path, "b", "1.0", [])
    with pytest.raises(SystemExit, match="conflicts"):
        iw.plan("a", {"a": [(Version("1.0"), a)], "b": [(Version("1.0"), b)], "c": [(Version("1.0"), c)]},
                {}.get, iw.wheel_requirements)
