"""GGUF files: the metadata the study relies on (chat template, special tokens) and conversion to float weights.

The offline models ship as quantised GGUF; gradients and LoRA need ordinary float weights,
so a GGUF is dequantised once into a float32 safetensors folder (:func:`convert_gguf`),
taking the chat template and special tokens from the file's own metadata so that every
transformers version yields the same tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nnsight_inoc.models.errors import ModelError
from nnsight_inoc.models.stops import stop_ids_for_cache


def gguf_chat_template(gguf_path: Path) -> str | None:
    """The ``tokenizer.chat_template`` string stored in a GGUF file's metadata, if any."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


_SPECIAL_KEYS = {"eos": "tokenizer.ggml.eos_token_id", "bos": "tokenizer.ggml.bos_token_id",
                 "pad": "tokenizer.ggml.padding_token_id"}


def gguf_special_token_ids(gguf_path: Path) -> dict[str, int]:
    """eos/bos/pad token ids from GGUF metadata (the file's own word on which token ends a turn)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    out = {}
    for role, key in _SPECIAL_KEYS.items():
        f = fields.get(key)
        if f is not None:
            out[role] = int(f.parts[f.data[0]][0])
    return out


def apply_special_tokens(tokenizer: Any, ids: dict[str, int]) -> None:
    """Make the tokenizer's special tokens agree with the GGUF metadata.

    transformers 5.17 reads Qwen's GGUF with eos = <|endoftext|> while the file (and 5.24) say
    <|im_end|>; with the wrong eos, generation runs past the end of the turn and SFT targets end
    with the wrong token. Setting them from the file makes every version agree.
    """
    for role, tid in ids.items():
        if getattr(tokenizer, f"{role}_token_id") != tid:
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(tid))


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF into a float32 safetensors folder (model + tokenizer + chat template).

    We convert once because gradients/LoRA need ordinary float weights and dequantising
    costs minutes. Not atomic by itself: callers that need atomicity pass a temp folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file not found: {gguf_path}")
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as e:  # transformers raises many types; the cause is kept in the chain
        raise ModelError(f"could not read the tokenizer from {gguf_path}: {e}") from e
    apply_special_tokens(tokenizer, gguf_special_token_ids(gguf_path))
    if not tokenizer.chat_template:
        # transformers 5.17 does not copy the template out of GGUF metadata (5.24 does): read it
        # from the file itself, the same bytes either way.
        tokenizer.chat_template = gguf_chat_template(gguf_path)
    if not tokenizer.chat_template:  # checked before the slow dequantisation
        raise ModelError(f"{gguf_path} has no chat template (tokenizer.chat_template); the study needs one")
    try:
        # dequantize=True: otherwise transformers may keep GGUF blocks, which it refuses to save.
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
        )
    except Exception as e:
        raise ModelError(f"could not convert {gguf_path} to a float model: {e}") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        # Every id that ends a turn, from the GGUF metadata (a GGUF stores one eos id; Qwen2.5 instruct models stop
        # on <|im_end|> and <|endoftext|>): generation and decoding read the union from here (trace/stops.py).
        gen.eos_token_id = stop_ids_for_cache(gguf_path)
        gen.pad_token_id = tokenizer.pad_token_id
        gen.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if not list(out_dir.glob("*.safetensors")):
        raise ModelError(f"conversion of {gguf_path} wrote no safetensors files into {out_dir}")
