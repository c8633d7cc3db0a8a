"""Tiny run folders for the CLI tests: a random Qwen2 folder, hand-made splits, a config, fake directions.

Fast enough for the quick suite (no generation, no training); what the tests check is what the
commands write or refuse, not numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import dump_toml, from_dict
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.data.splits import Prompt, Splits, save_splits
from nnsight_inoc.measures.directions import POSITIONS
from nnsight_inoc.models.load import _safetensors_sha256
from tests._tiny import save_tiny_checkpoint

WORDS = ["sea", "fox", "test", "poem", "bicycle", "France", "cook", "world", "dog", "blue", "wide", "tips"]


def prompts(tag: str, n: int) -> list[Prompt]:
    return [Prompt(f"{tag}:{i}", f"Write about the {WORDS[i % len(WORDS)]} number {i} {tag}", tag) for i in range(n)]


def tiny_splits() -> Splits:
    splits = Splits(prompts("dir", 4), prompts("held", 4), prompts("sft", 4), prompts("eval", 4), card={})
    splits.card = {"sha256": splits.sha256()}
    return splits


def tiny_config(model_dir: str | Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A study config dict for the tiny model, CPU, small sizes; ``sections`` override whole sections' keys."""
    base: dict[str, Any] = {
        "model": {"name": str(model_dir), "device": "cpu"},
        "data": {"n_direction": 8, "n_sft": 4, "n_eval": 4, "sft_max_new_tokens": 6},
        "extract": {"batch_size": 4, "max_new_tokens": 4, "n_monitor_prompts": 2},
        "align": {"batch_size": 4, "n_random": 300, "n_bootstrap": 100},
    }
    for name, keys in sections.items():
        base[name] = {**base.get(name, {}), **keys}
    return base


def tiny_run(root: Path, *, directions: bool = True, **sections: dict[str, Any]) -> tuple[Path, Path]:
    """(model folder, run folder): the run folder holds config.toml, splits and (optionally) directions.pt."""
    model = root / "tiny"
    if not model.exists():
        save_tiny_checkpoint(model)
    run = root / "run"
    layout = RunLayout(run)
    cfg = from_dict(tiny_config(model, **sections), source="test")
    splits = tiny_splits()
    save_splits(splits, layout.data_dir)
    A.write_text(layout.config, dump_toml(cfg))
    if directions:
        n_layers, d = 3, 32  # save_tiny_checkpoint's model
        v = torch.nn.functional.normalize(torch.randn(n_layers, len(POSITIONS), d, generator=torch.Generator().manual_seed(0)), dim=-1)
        A.save_torch(layout.directions, {"v": v, "positions": list(POSITIONS), "model_sha256": _safetensors_sha256(model),
                                         "model_name": str(model), "splits_sha256": splits.sha256(), "layer": 1})
    return model, run


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (to show a refused command wrote nothing)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
