"""The one set of stop ids for every generation path, and decoding that never glues text.

Why: a greedy decoder that passes only the tokenizer's eos id overrides the model's own
list of stop ids (Qwen2.5 instruct models stop on ``<|im_end|>`` *and* ``<|endoftext|>``).
The model then runs on past ``<|endoftext|>``, and ``skip_special_tokens=True`` deletes
that token from the text, gluing together the text on either side of it. Here:

- :func:`stop_ids` is the union of every source that names a stop (tokenizer, generation
  config, GGUF metadata), so no source can narrow it.
- :func:`truncate_at_stop` cuts at the first stop id.
- :func:`answer_ids` / :func:`decode_answer` cut there and then refuse (raise) on any
  special token left inside the answer instead of deleting it.
- :func:`stop_ids_for_cache` reads, from a GGUF file, every id that ends generation, so
  that a float cache converted from it can keep them all (a GGUF stores one eos id).

This module imports nothing from the package (it sits at the bottom of the generation layer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


class StopError(ValueError):
    """No stop id could be found, or an answer holds a special token that is not a stop."""


# Token texts that end generation whatever their id, as llama.cpp decides for every GGUF it
# loads (ggml-org/llama.cpp, src/llama-vocab.cpp, the end-of-generation set built in the
# vocabulary loader). Only the end-of-turn / end-of-text names are taken; llama.cpp also
# adds the fill-in-the-middle pad/repo/file-separator tokens, which a chat answer has no
# business emitting: those stay "special, not a stop", so decode_answer raises on them.
EOG_TOKEN_TEXTS: tuple[str, ...] = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
)

# GGUF metadata keys whose value is a token id that ends generation (GGUF spec,
# ggml-org/ggml docs/gguf.md, "tokenizer.ggml.*_token_id"). padding/bos are not stops.
GGUF_STOP_KEYS: tuple[str, ...] = (
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
)


def _as_ids(value: Any, source: str) -> list[int]:
    """An ``eos_token_id`` field (None, an int, or a list of ints) as a list of ids."""
    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise StopError(f"{source} holds {v!r}, which is not a token id (a non-negative int)")
        out.append(int(v))
    return out


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def stop_id_sources(
    tokenizer: Any,
    generation_config: Any = None,
    gguf_ids: Iterable[int] | None = None,
) -> dict[int, tuple[str, ...]]:
    """Every stop id, mapped to the sources that name it (for provenance and error messages).

    Sources, each optional: ``tokenizer.eos_token_id`` ("tokenizer.eos"); the
    ``eos_token_id`` of ``generation_config`` (a ``GenerationConfig``, a model config or
    a mapping; int or list: "generation_config.eos"); ``gguf_ids``, e.g. from
    :func:`stop_ids_for_cache` ("gguf"). Ordered by id.

    Raises StopError when a source holds something that is not a token id.
    """
    named: dict[int, list[str]] = {}
    for source, ids in (
        ("tokenizer.eos", _as_ids(_field(tokenizer, "eos_token_id"), "tokenizer.eos_token_id")),
        ("generation_config.eos", _as_ids(_field(generation_config, "eos_token_id"),
                                          "generation_config.eos_token_id")),
        ("gguf", _as_ids(list(gguf_ids) if gguf_ids is not None else None, "gguf_ids")),
    ):
        for i in ids:
            named.setdefault(i, []).append(source)
    return {i: tuple(named[i]) for i in sorted(named)}


def stop_ids(
    tokenizer: Any,
    generation_config: Any = None,
    gguf_ids: Iterable[int] | None = None,
) -> tuple[int, ...]:
    """The union of stop ids from the tokenizer, the generation config and GGUF metadata.

    Sorted, without duplicates; see :func:`stop_id_sources` for what each source is. Pass
    the result as ``eos_token_id`` to ``generate`` (HF stops a row at any id of a list) and
    to :func:`truncate_at_stop` / :func:`decode_answer`, so generation and decoding agree.

    Raises StopError when no source names a stop id: generation could then only end at the
    length cap, and every answer would run on into whatever the model writes next.
    """
    ids = tuple(stop_id_sources(tokenizer, generation_config, gguf_ids))
    if not ids:
        raise StopError("no stop id: the tokenizer, the generation config and the GGUF metadata name no eos token")
    return ids


def truncate_at_stop(ids: Sequence[int], stops: Iterable[int]) -> list[int]:
    """``ids`` up to (not including) the first stop id; all of ``ids`` when none occurs."""
    stop_set = set(stops)
    for pos, t in enumerate(ids):
        if int(t) in stop_set:
            return [int(x) for x in ids[:pos]]
    return [int(x) for x in ids]


def special_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids the tokenizer treats as special: what ``skip_special_tokens=True`` would delete.

    The named special tokens (``all_special_ids``) and every added token flagged special
    (Qwen's ``<|im_start|>``, ``<|fim_pad|>``, ...; transformers' ``added_tokens_decoder``).
    """
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return frozenset(ids)


def answer_ids(
    ids: Sequence[int],
    stops: Iterable[int],
    special: Iterable[int],
    pad_id: int | None = None,
    names: Mapping[int, str] | None = None,
) -> list[int]:
    """The answer's token ids: cut at the first stop, checked to hold no special token.

    Args:
        ids: generated ids of one row (the continuation only, not the prompt).
        stops: the stop set (:func:`stop_ids`).
        special: ids that are special (:func:`special_token_ids`).
        pad_id: padding id. Only a trailing run of it is dropped (what ``generate``
            writes after a row has ended); padding followed by more tokens is answer text
            and raises like any other special token.
        names: id -> token text, for the error message.

    Raises StopError naming the first special token that is not a stop id and the
    position where the answer continues past it: the answer would otherwise be two texts
    glued together.
    """
    stop_set = frozenset(stops)  # used twice: an iterator must not be consumed by the first use
    cut = truncate_at_stop(ids, stop_set)
    if pad_id is not None:
        while cut and cut[-1] == pad_id:
            cut.pop()
    special_set = set(special)
    for pos, t in enumerate(cut):
        if t in special_set:
            name = names.get(t, "?") if names is not None else "?"
            raise StopError(
                f"answer continues past special token {name!r} (id {t}) at position {pos} of {len(cut)}: "
                f"it is not a stop id {sorted(stop_set)}, so the text on either side would be glued together"
            )
    return cut


def decode_answer(
    tokenizer: Any,
    ids: Sequence[int],
    stops: Iterable[int],
    pad_id: int | None = None,
) -> str:
    """Decoded answer text of one generated row (stripped), with nothing deleted silently.

    :func:`answer_ids` with the tokenizer's special ids and token names, then a decode with
    ``skip_special_tokens=False`` (none are left to skip). ``pad_id`` defaults to the
    tokenizer's pad id. Raises StopError as :func:`answer_ids` does.
    """
    stops = tuple(stops)
    special = special_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if pad_id is None else pad_id
    present = [int(t) for t in ids if int(t) in special]
    names = dict(zip(present, tokenizer.convert_ids_to_tokens(present))) if present else {}
    cut = answer_ids(ids, stops, special, pad, names)
    return tokenizer.decode(cut, skip_special_tokens=False).strip()


def gguf_stop_sources(gguf_path: Path | str) -> dict[int, tuple[str, ...]]:
    """Every id that ends generation according to a GGUF file, mapped to why.

    Reasons: a metadata key of :data:`GGUF_STOP_KEYS` (the key's name), or the token's text
    being in :data:`EOG_TOKEN_TEXTS` ("text:<token>", llama.cpp's rule for the same file).
    Ordered by id. Raises StopError when the file is missing or has no token list.
    """
    # the gguf package: a project dependency, imported on use (as model_cache does)
    from gguf import GGUFReader

    path = Path(gguf_path)
    if not path.is_file():
        raise StopError(f"GGUF file not found: {path}")
    fields = GGUFReader(str(path)).fields
    named: dict[int, list[str]] = {}
    for key in GGUF_STOP_KEYS:
        f = fields.get(key)
        if f is not None:
            named.setdefault(int(f.parts[f.data[0]][0]), []).append(key)
    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise StopError(f"{path} has no tokenizer.ggml.tokens; cannot tell which tokens end generation")
    wanted = set(EOG_TOKEN_TEXTS)
    for i, part in enumerate(tokens.data):
        text = bytes(tokens.parts[part]).decode("utf-8", errors="replace")
        if text in wanted:
            named.setdefault(i, []).append(f"text:{text}")
    return {i: tuple(named[i]) for i in sorted(named)}


def stop_ids_for_cache(gguf_path: Path | str) -> list[int]:
    """Every stop id of a GGUF file, to be written into the converted cache.

    The file's own metadata stop ids first (eos, eot, eom, in that order: HF falls back to
    the first entry where it needs a single id), then the ids named by token text, ascending.
    For Qwen2.5-Coder-1.5B-Instruct's GGUF this is [151645, 151643] (eos <|im_end|>, then
    <|endoftext|>), the list the hub model's generation_config.json holds; for
    SmolLM2-135M-Instruct it is [2, 0].

    ``convert_gguf`` should set ``model.generation_config.eos_token_id`` to this list
    before ``save_pretrained``, so the cached ``generation_config.json`` carries the union.

    Raises StopError when the file names no stop id at all.
    """
    sources = gguf_stop_sources(gguf_path)
    if not sources:
        raise StopError(f"{gguf_path} names no stop id (no {', '.join(GGUF_STOP_KEYS)}, no end-of-text token)")
    by_key = [i for key in GGUF_STOP_KEYS for i, why in sources.items() if key in why]
    first = list(dict.fromkeys(by_key))
    return first + [i for i in sources if i not in first]
