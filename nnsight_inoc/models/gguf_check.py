"""Is a .gguf file whole? Checked on the user's own file before it is hashed, copied or converted.

A truncated download used to fail inside the conversion with a numpy reshape error naming a
temporary copy. The GGUF reader maps every tensor's bytes when it opens a file, so opening it
(and checking that the last tensor ends inside the file) catches truncation and corruption in
milliseconds, and the error names the user's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnsight_inoc.models.errors import ModelInputError


@dataclass(frozen=True)
class GGUFInfo:
    """What the study needs from a GGUF's header before converting it."""

    arch: str  # general.architecture, e.g. "qwen2", "llama"
    n_layers: int | None  # <arch>.block_count
    d_model: int | None  # <arch>.embedding_length
    size: int  # bytes
    context: int | None = None  # <arch>.context_length: the positions the model was trained on


def check_gguf(path: Path) -> GGUFInfo:
    """Open ``path`` as GGUF and check its tensor data is all there.

    Raises :class:`ModelInputError` naming ``path`` and saying it is truncated or corrupt.
    """
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise ModelInputError(f"GGUF file not found: {path}")
    size = path.stat().st_size
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError, struct/numpy errors, ...: all mean a bad file
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelInputError(f"{path} is truncated or corrupt: not a readable GGUF file ({size} bytes; the reader "
                              f"said {type(e).__name__}: {first})") from None
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise ModelInputError(f"{path} is truncated: its tensors need {end} bytes, the file has {size}")
    arch = _string(reader, "general.architecture") or "unknown"
    return GGUFInfo(arch, _int(reader, f"{arch}.block_count"), _int(reader, f"{arch}.embedding_length"), size,
                    _int(reader, f"{arch}.context_length"))


def _string(reader: object, key: str) -> str | None:
    f = reader.fields.get(key)  # type: ignore[attr-defined]
    return None if f is None else bytes(f.parts[f.data[0]]).decode("utf-8")


def _int(reader: object, key: str) -> int | None:
    f = reader.fields.get(key)  # type: ignore[attr-defined]
    return None if f is None else int(f.parts[f.data[0]][0])
