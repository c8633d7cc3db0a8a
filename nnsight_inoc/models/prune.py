"""Dropping a preset's downloaded GGUF from the model cache after a verified conversion.

The cache keeps the GGUF (1.1 GB for the study model) beside its float32 conversion (7.1 GB) so
that a conversion can be redone offline; once the conversion is verified it is only a spare.
``models fetch NAME --drop-gguf`` removes it. Verified means: the cache passes every check that
``fetch`` relies on (manifest, sizes, the GGUF's sha256 from the download), and the float weights'
own sha256 is then recorded in the manifest, so the cache stays checkable without the GGUF.
A later fetch that finds the cache invalid downloads the GGUF again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

from nnsight_inoc.core.hashing import sha256_file
from nnsight_inoc.models.cache import (
    MANIFEST,
    SOURCE_GGUF,
    Preset,
    cache_problem,
    get_preset,
    models_dir,
    read_manifest,
)
from nnsight_inoc.models.errors import ModelError


def gguf_in_cache(name: str, *, home: Path | None = None) -> Path | None:
    """The cached GGUF of preset ``name`` when it is still there."""
    path = models_dir(home) / name / SOURCE_GGUF
    return path if path.is_file() else None


def drop_gguf(name: str, *, home: Path | None = None, presets: Mapping[str, Preset] | None = None) -> int:
    """Delete the cached GGUF of a preset whose conversion checks out; returns the bytes freed (0 if gone).

    The manifest is rewritten first (atomically), naming the weights' sha256 and the drop, and the
    file is removed after it, so an interruption leaves a valid cache either way. ModelError when
    the cache is missing or invalid (nothing is dropped then).
    """
    preset = get_preset(name, presets)
    folder = models_dir(home) / preset.name
    problem = cache_problem(folder, preset.sha256, preset.size) if folder.exists() else "not cached"
    if problem is not None:
        raise ModelError(f"{preset.name}: the cache is not valid ({problem}); fetch it first (nothing was dropped)")
    manifest = read_manifest(folder) or {}
    gguf = folder / SOURCE_GGUF
    if manifest.get("gguf_dropped") or not gguf.is_file():
        return 0
    size = gguf.stat().st_size
    files = {k: v for k, v in manifest["files"].items() if k != SOURCE_GGUF}
    weights = {k: sha256_file(folder / k) for k in files if k.endswith(".safetensors")}
    new = {**manifest, "files": files, "weights_sha256": weights,
           "gguf_dropped": {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "bytes": size}}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(new, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)
    gguf.unlink()
    return size
