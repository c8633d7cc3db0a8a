"""A tiny random model saved as a Hugging Face folder: what ``--model <folder>`` loads in tests."""

from __future__ import annotations

from pathlib import Path

from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer


def save_tiny_checkpoint(folder: Path | str, num_layers: int = 3, hidden_size: int = 32, seed: int = 5) -> str:
    """Write a tiny model + tokenizer as an HF folder (what `--model <folder>` loads); returns the path."""
    tiny_qwen2(num_layers=num_layers, hidden_size=hidden_size, seed=seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)
