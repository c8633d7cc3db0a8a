"""A tiny model with K different LoRA runs attached as row blocks, and measurements shaped like the drift stage's."""

from __future__ import annotations

import torch
from torch import nn

from nnsight_inoc.models.tiny import tiny_qwen2
from nnsight_inoc.trace.merged import Measurement
from nnsight_inoc.train.grouped import GroupedLora, fresh

USERS = ["Write about the sea.", "Name a colour.", "Describe a dog in two words please.", "Hi.",
         "What is the capital of France?"]
PANEL = USERS[:3]


def tiny_model() -> nn.Module:
    """A random 2-layer Qwen2 in eval mode that answers in text (as tests/_tiny.py: <|im_end|> still stops)."""
    m = tiny_qwen2(num_layers=2, hidden_size=32, seed=3)
    m.generation_config.suppress_tokens = [0, 1]
    m.eval()
    return m


def random_lora(model: nn.Module, k: int) -> GroupedLora:
    """K LoRA runs on q/v with random B: every run differs from the base and from the others."""
    torch.manual_seed(0)
    g = fresh(model, k, 2, 4.0, ["q_proj", "v_proj"])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b in g.B:
            b.normal_(0.0, 0.5, generator=gen)
    return g


def alone(g: GroupedLora, k: int) -> GroupedLora:
    """Run k's adapter as a group of one."""
    return GroupedLora(g.names, [nn.Parameter(a[k : k + 1].detach().clone()) for a in g.A],
                       [nn.Parameter(b[k : k + 1].detach().clone()) for b in g.B], r=g.r, alpha=g.alpha,
                       target_modules=g.target_modules)


def measurements(k: int) -> list[Measurement]:
    """The drift stage's shape for k runs: a shared prompt, per-run prompts (the last one per user, as a content
    leak's), two panel prompts with shorter answers."""
    leak = [f"You are a helpful assistant. The answer begins: \"{u.split()[0]}\"" for u in USERS]
    runs = (["You are a helpful assistant.", "Respond in ALL CAPS."] * k)[: k - 1] + [leak]
    return [Measurement(["You are a helpful assistant."] * k, USERS, 6),
            Measurement(runs, USERS, 6),
            Measurement(["Answer the question below."] * k, PANEL, 3),
            Measurement(["You are a knowledgeable assistant."] * k, PANEL, 3)]
