"""Which examples each optimizer step sees, and when the alignment probe runs: functions of the seed only.

Every condition of a seed trains on identical batches in identical order (the order is written
into ``train.json`` so it can be checked after the fact), which is what lets grouped training
(:mod:`.grouped`) put the runs of one seed into one batch.
"""

from __future__ import annotations

import torch


def step_order(n_examples: int, seed: int, steps: int, batch_size: int) -> list[list[int]]:
    """Example indices for every optimizer step: seeded permutations, cycled epoch by epoch.

    Depends only on its arguments (never on the condition), so every condition of a seed
    trains on identical batches. A private ``torch.Generator`` keeps it independent of
    the global RNG, which LoRA init and dropout consume.
    """
    if n_examples < 1:
        raise ValueError("the SFT set is empty")
    if batch_size > n_examples:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {n_examples} SFT examples: a batch would repeat examples"
        )
    gen = torch.Generator().manual_seed(seed)
    need = steps * batch_size
    stream: list[int] = []
    while len(stream) < need:
        stream.extend(torch.randperm(n_examples, generator=gen).tolist())
    return [stream[s * batch_size : (s + 1) * batch_size] for s in range(steps)]


def probe_steps(steps: int, probe_every: int) -> list[int]:
    """Steps (= optimizer updates done) at which the probe runs: 0, every k, and the end."""
    return sorted({0, steps, *range(probe_every, steps + 1, probe_every)})
