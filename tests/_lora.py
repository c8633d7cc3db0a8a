"""A tiny random Qwen2 with PEFT LoRA adapters whose B matrices are randomised, so every LoRA weight gets a gradient."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import LoraConfig, get_peft_model

from nnsight_inoc.models.tiny import tiny_qwen2


def tiny_lora(targets: Sequence[str] = ("q_proj", "v_proj"), seed: int = 0, num_layers: int = 4) -> torch.nn.Module:
    """Frozen tiny base (seed 1), LoRA r=4 alpha=8 on ``targets``; lora_B drawn from N(0, 0.1^2) with ``seed``."""
    base = tiny_qwen2(num_layers=num_layers, seed=1)
    base.requires_grad_(False)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=list(targets)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model
