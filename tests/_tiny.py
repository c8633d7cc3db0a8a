"""A tiny random model saved as a Hugging Face folder: what ``--model <folder>`` loads in tests."""

from __future__ import annotations

from pathlib import Path

from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer


def save_tiny_checkpoint(folder: Path | str, num_layers: int = 3, hidden_size: int = 32, seed: int = 5) -> str:
    """Write a tiny model + tokenizer as an HF folder (what `--model <folder>` loads); returns the path."""
    model = tiny_qwen2(num_layers=num_layers, hidden_size=hidden_size, seed=seed)
    # A random model picks <|endoftext|> and <|im_start|> as readily as any word; a real chat model never opens
    # a new turn inside an answer, and greedy decoding refuses one that does (models/stops.py). Suppressing
    # the two keeps the study tests' generations answer-shaped; <|im_end|> (the stop) stays possible.
    model.generation_config.suppress_tokens = [0, 1]
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)
