"""Runs ON the GPU machine: install a package and whichever of its requirements this Python lacks, from wheels.

    python3 gpu/install_wheels.py WHEEL_DIR 'ray==2.60.0' --target /root/site

Why not ``pip install --target``: with ``--target`` pip ignores what is installed and would put every
requirement (protobuf, packaging, requests, ...) into the target, shadowing the versions torch and
transformers were installed with. Here a requirement met by an installed distribution (anywhere on
``sys.path``, the target included) is left alone; a missing or too old one is installed from
WHEEL_DIR with ``--no-deps``, and its own requirements are checked the same way. Exits with one line
naming the requirement when WHEEL_DIR has no wheel that satisfies it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version


def wheel_requirements(path: Path) -> list[Requirement]:
    """The requirements a wheel declares for this interpreter, without extras (its METADATA Requires-Dist)."""
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def installed_version(name: str) -> Version | None:
    try:
        return Version(metadata.version(name))
    except metadata.PackageNotFoundError:
        return None


def plan(root: str, wheels: dict[NormalizedName, list[tuple[Version, Path]]],
         installed: Callable[[str], Version | None],
         requirements: Callable[[Path], list[Requirement]]) -> list[Path]:
    """The wheels to install for `root` (a requirement string), in the order they were found needed.

    SystemExit (one line) when a needed requirement has no satisfying wheel, or two requirements
    of one package disagree with the wheel chosen first.
    """
    todo, chosen = [Requirement(root)], {}
    while todo:
        req = todo.pop(0)
        name = canonicalize_name(req.name)
        if name in chosen:
            if not req.specifier.contains(chosen[name][0], prereleases=True):
                raise SystemExit(f"{req} conflicts with the {name} {chosen[name][0]} chosen for another requirement")
            continue
        have = installed(name)
        if have is not None and req.specifier.contains(have, prereleases=True):
            continue
        fits = [w for w in wheels.get(name, []) if req.specifier.contains(w[0], prereleases=True)]
        if not fits:
            raise SystemExit(f"{req} is needed (installed: {have or 'none'}) and no wheel for it is in the folder")
        chosen[name] = max(fits)
        todo += requirements(chosen[name][1])
    return [path for _, path in chosen.values()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel_dir", type=Path)
    ap.add_argument("requirement")
    ap.add_argument("--target", type=Path, required=True)
    args = ap.parse_args()
    wheels: dict[NormalizedName, list[tuple[Version, Path]]] = {}
    for path in sorted(args.wheel_dir.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        wheels.setdefault(name, []).append((version, path))
    todo = plan(args.requirement, wheels, installed_version, wheel_requirements)
    print("installing:", " ".join(p.name for p in todo) or "nothing (all requirements met)")
    if todo:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--upgrade", "--target", str(args.target), *map(str, todo)], check=True)


if __name__ == "__main__":
    main()
