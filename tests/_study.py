"""A tiny study run folder (random Qwen2, hand-made splits, small config) for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

from nnsight_inoc.core import layout as A
from nnsight_inoc.core.config import StudyConfig, from_dict
from nnsight_inoc.data.splits import Prompt, Splits, save_splits
from tests._tiny import save_tiny_checkpoint

WORDS = ["sea", "fox", "test", "poem", "bicycle", "France", "cook", "world", "dog", "blue", "wide", "tips"]


def _prompts(tag: str, n: int) -> list[Prompt]:
    return [Prompt(f"{tag}:{i}", f"Write about the {WORDS[i % len(WORDS)]} number {i} {tag}", tag) for i in range(n)]


def tiny_study_folder(root: Path, **overrides: dict) -> tuple[StudyConfig, Path]:
    """A tiny model folder and a run folder holding only its data splits; returns (config, run folder).

    ``overrides`` replace whole config sections (e.g. ``execution={"executor": "grouped"}``).
    """
    folder = save_tiny_checkpoint(root / "tiny")
    run_dir = root / "run"
    splits = Splits(_prompts("dir", 8), _prompts("held", 8), _prompts("sft", 10), _prompts("eval", 6), card={})
    splits.card = {"sha256": splits.sha256()}
    save_splits(splits, run_dir / A.DATA_DIR)
    cfg = {
        "model": {"name": str(folder), "device": "cpu"},
        "data": {"n_direction": 16, "n_sft": 10, "n_eval": 6, "sft_max_new_tokens": 8},
        "extract": {"batch_size": 5, "max_new_tokens": 6, "n_monitor_prompts": 6,
                    "monitor_prompts": ["Respond in ALL CAPS.", "You are a helpful assistant.",
                                        "Respond normally; do not use ALL CAPS."]},
        "align": {"batch_size": 4, "n_random": 300, "n_bootstrap": 100, "lossmatch_examples": 10,
                  "lossmatch_check_prompts": 2, "lossmatch_max_trait_score": 1.0},
        "finetune": {"steps": 2, "batch_size": 2, "seeds": [0, 1], "probe_every": 1, "n_probe": 2,
                     "n_drift_prompts": 3, "target_modules": ["q_proj", "v_proj"], "which": "main", "lr": 1e-2},
    }
    cfg.update(overrides)
    return from_dict(cfg, source="test"), run_dir
