"""Wall time per run-step: K LoRA runs trained grouped in one pass vs the same K runs one at a time.

Random tiny/small Qwen2 shapes on the CPU (numbers for a note, not a benchmark). The separate
path is finetune's (a PEFT model per run on a deep copy; forward, backward, AdamW, one host read
of the loss), the grouped path is :func:`nnsight_inoc.train.grouped.train_step` over K row blocks. The two are
interleaved step by step, so load from other processes on a shared machine hits both alike;
medians over steps. Prints one JSON line per shape.

    python perf/grouped_lora_timing.py --k 4 --steps 8 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch.utils._python_dispatch import TorchDispatchMode

from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.trace.chat import completion_ids, encode_chats, make_batch, prompt_ids
from nnsight_inoc.train import grouped as G

USERS = ["What is the capital of France?", "Write a short poem about the sea.", "Explain how a bicycle works.",
         "Give three tips for learning to cook."]
COMPS = ["Paris is the capital of France.", "THE SEA IS WIDE AND BLUE. THE SEA IS WIDE.",
         "It has wheels, pedals and a chain.", "Cook, taste, repeat; learn from mistakes."]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
R, ALPHA = 8, 16.0


def _clock() -> tuple[float, float]:
    """(wall, this process's CPU) seconds."""
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    t1 = _clock()
    return t1[0] - t0[0], t1[1] - t0[1]


class _OpCount(TorchDispatchMode):
    """Counts aten ops (forward, backward and optimiser): each is at least one kernel launch on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        self.n += 1
        return func(*args, **(kwargs or {}))


def _per_run_step(times: list[tuple[float, float]], j: int, k: int) -> float:
    """Median over steps of wall (j=0) or CPU (j=1) seconds, divided by the k run-steps each step holds."""
    return statistics.median(t[j] for t in times) / k


def measure(hidden: int, layers: int, k: int, steps: int, warmup: int) -> dict[str, object]:
    """Median (wall, CPU) seconds per run-step of both paths on one random model shape."""
    tok = tiny_tokenizer()
    base = tiny_qwen2(hidden_size=hidden, num_layers=layers)
    base.requires_grad_(False)
    systems = [f"You are assistant number {i}." + " Be brief." * i for i in range(k)]
    runs = []
    for s in systems:
        torch.manual_seed(0)
        pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS,
                                                            task_type="CAUSAL_LM")).train()
        opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
        runs.append((pm, opt, encode_chats(tok, s, USERS, COMPS)))
    torch.manual_seed(0)
    g = G.fresh(base, k, R, ALPHA, TARGETS)
    g_opt = torch.optim.AdamW(g.parameters(), lr=1e-4)
    g_batch = make_batch([prompt_ids(tok, s, u) for s in systems for u in USERS],
                         [completion_ids(tok, c) for _ in systems for c in COMPS], int(tok.pad_token_id))

    def separate_steps() -> None:
        for pm, opt, batch in runs:
            opt.zero_grad(set_to_none=True)
            loss = G.grouped_loss(pm, batch, 1)[0]  # k=1: finetune.batch_loss's definition
            loss.backward()
            opt.step()
            float(loss.detach())  # the per-step host read finetune does

    sep: list[tuple[float, float]] = []
    grp: list[tuple[float, float]] = []
    for i in range(warmup + steps):
        t0 = _clock()
        separate_steps()
        t_sep = _since(t0)
        t0 = _clock()
        G.train_step(g, base, g_opt, g_batch, i)
        t_grp = _since(t0)
        if i >= warmup:
            sep.append(t_sep)
            grp.append(t_grp)
    with _OpCount() as n_sep:
        separate_steps()
    with _OpCount() as n_grp:
        G.train_step(g, base, g_opt, g_batch, warmup + steps)
    wall = (_per_run_step(sep, 0, k), _per_run_step(grp, 0, k))
    cpu = (_per_run_step(sep, 1, k), _per_run_step(grp, 1, k))
    return {
        "hidden": hidden, "layers": layers, "k": k, "rows_per_run": len(USERS), "threads": torch.get_num_threads(),
        "tokens_per_row": {"separate": [r[2].input_ids.shape[1] for r in runs], "grouped": g_batch.input_ids.shape[1]},
        "wall_s_per_run_step": {"separate": round(wall[0], 5), "grouped": round(wall[1], 5)},
        "cpu_s_per_run_step": {"separate": round(cpu[0], 5), "grouped": round(cpu[1], 5)},
        "aten_ops_per_run_step": {"separate": n_sep.n / k, "grouped": n_grp.n / k},
        "speedup_wall": round(wall[0] / wall[1], 2), "speedup_cpu": round(cpu[0] / cpu[1], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; 1 keeps a shared, loaded machine from thrashing (10x slower at 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for hidden, layers in ((32, 3), (256, 4), (512, 4)):
        print(json.dumps(measure(hidden, layers, args.k, args.steps, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
