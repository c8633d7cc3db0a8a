"""Run folders: fixed file names, atomic writes, provenance beside every result.

A result file alone must say how it was made, and an interrupted write must never
leave a file that looks complete: every write goes to a temporary sibling and is
moved into place with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import gzip
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

PACKAGES = ("torch", "transformers", "nnsight", "peft", "numpy", "scipy", "scikit-learn", "pydantic", "gguf")


def _tmp_for(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_bytes(path: Path, data: bytes) -> None:
    tmp = _tmp_for(path)
    try:
        tmp.write_bytes(data)
        tmp.chmod(0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def write_json(path: Path, obj: Any) -> None:
    # NaN is written as null: JSON has no NaN and a reader must see "missing", not a number.
    text = json.dumps(_nan_to_none(obj), indent=2, default=_json_default, allow_nan=False)
    write_text(path, text + "\n")


def _nan_to_none(o: Any) -> Any:
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, (np.floating,)) and not np.isfinite(o):
        return None
    if isinstance(o, np.ndarray):
        return _nan_to_none(o.tolist())
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"missing artifact {path}; run the stage that makes it first")
    return json.loads(path.read_text())


def save_torch(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def load_torch(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"missing artifact {path}; run the stage that makes it first")
    return torch.load(path, map_location="cpu", weights_only=False)


@contextlib.contextmanager
def folder_written_atomically(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` to write into; on success it replaces ``target`` (an older one is
    removed), on failure it is deleted, so a crash never leaves a half-written folder under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_csv_gz(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write a gzipped tidy CSV atomically; returns the row count."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    n = 0
    for r in rows:
        w.writerow(r)
        n += 1
    data = buf.getvalue().encode()
    write_bytes(path, gzip.compress(data, compresslevel=6, mtime=0) if path.suffix == ".gz" else data)
    return n


CODE_PATHS = ("nnsight_inoc", "cli.py", "gpu", "experiments", "pyproject.toml", "setup.sh")


def git_info() -> dict[str, Any]:
    """Commit hash and whether the code had uncommitted changes (results from dirty code say so).

    "Code" is what computes numbers (CODE_PATHS): results and run folders being written while a
    report is made must not mark it dirty.
    """
    env = os.environ.get("NNSIGHT_INOC_GIT_COMMIT")
    if env:  # said by the caller (a copy of the tree on the GPU machine): wins over whatever .git the copy holds
        return {"commit": env, "dirty": None, "source": "NNSIGHT_INOC_GIT_COMMIT"}
    root = Path(__file__).resolve().parents[2]  # the checkout: nnsight_inoc/core/artifacts.py -> repository root
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=root, capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"commit": None, "dirty": None, "error": str(err)}
    if head.returncode != 0:  # a copy without .git: set NNSIGHT_INOC_GIT_COMMIT
        return {"commit": None, "dirty": None, "error": head.stderr.strip() or "not a git checkout"}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_count"] = torch.cuda.device_count()
        info["cuda_version"] = torch.version.cuda
    else:
        info["cuda_device"] = None
    return info


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on a folder for a short read-modify-write (held by one process at a time)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Provenance:
    """This process's invocation, stage timings and facts, merged into a provenance file after every stage.

    Several processes may write one file (commands one after another, an experiment beside a
    stage). Every save therefore re-reads the file under an exclusive lock of its folder and
    merges this process's own records into it: its invocation (appended once), the stages and
    facts it set (the newest value of a key wins). No process loses another's records, and the
    write itself is atomic. ``sources`` (preset, config file, flags) and ``config_changes``
    (key -> [old, new] against the run folder's config) are kept with the invocation.
    """

    def __init__(self, path: Path, command: str, *, sources: dict[str, Any] | None = None,
                 config_changes: dict[str, Any] | None = None) -> None:
        self.path = path
        self.invocation: dict[str, Any] = {
            "command": command, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_info(),
            "versions": versions(), "device": device_info(), "id": uuid.uuid4().hex,
        }
        if sources is not None:
            self.invocation["config_sources"] = sources
        if config_changes:
            self.invocation["config_changes"] = {k: list(v) for k, v in config_changes.items()}
        self._stages: dict[str, Any] = {}
        self._facts: dict[str, Any] = {}
        self.data: dict[str, Any] = {}
        self.save()

    def fact(self, key: str, value: Any) -> None:
        self._facts[key] = value
        self.save()

    def stage(self, name: str, seconds: float, **extra: Any) -> None:
        self._stages[name] = {"seconds": round(seconds, 2), **extra}
        self.save()

    def save(self) -> None:
        with _folder_lock(self.path.parent):
            prev = json.loads(self.path.read_text()) if self.path.is_file() else {}
            # Every invocation is kept: a later summary-only call on another machine must not erase which
            # card, code and versions produced the numbers in the stages before it.
            history = prev.get("invocations") or (
                [{k: prev.get(k) for k in ("command", "git", "versions", "device")} | {"at": prev.get("started")}]
                if prev else [])
            if not any(i.get("id") == self.invocation["id"] for i in history):
                history = [*history, self.invocation]
            now = self.invocation
            self.data = {
                "command": now["command"], "started": prev.get("started", now["at"]), "git": now["git"],
                "versions": now["versions"], "device": now["device"], "invocations": history,
                "stages": {**prev.get("stages", {}), **self._stages},
                "facts": {**prev.get("facts", {}), **self._facts},
            }
            write_json(self.path, self.data)
