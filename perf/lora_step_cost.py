"""What one LoRA step of the study's shape costs with the old and the new NaN check, per matmul precision.

Issue 7: the H100 profile of the study's own steps (``results/bench/h100_bafdb2c/profile_train_step.json``)
counted 410 host syncs per step, 196 of them from checking each LoRA weight's gradient for NaN/inf one by
one. ``finetune._check_grads`` now checks one total norm (one sync). This measures both checks on random
weights of the study model's shape (no model upload needed), with the study's LoRA settings (the
``FinetuneConfig`` defaults: rank 8, all 7 projection modules) and a batch shaped like a study step
(8 rows, 1 456 real tokens padded to 1 880), in fp32 and TF32:

* median step time (forward, backward, check, AdamW, loss read back: what ``train_step`` does);
* a :func:`bench.device_profile` of one step: kernel time, kernels launched, host syncs.

    python perf/lora_step_cost.py --shape 1.5b --device cuda --out lora_step_cost.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from nnsight_inoc.core.config import FinetuneConfig
from nnsight_inoc.trace.chat import Batch, make_batch
from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.train import lora as F
from perf.bench import device_profile, qwen7b_shape

SHAPES: dict[str, dict[str, int]] = {
    # Qwen2.5-1.5B (qwen2.5-coder-1.5b-instruct): the study model
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, intermediate_size=8960, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=500),
}


def per_weight_check(params: dict[str, nn.Parameter], step: int) -> None:
    """The check before 2026-11-27 (third session): one ``isfinite(...).all()`` read back per weight."""
    bad = [n for n, p in params.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        raise NonFiniteError(f"step {step}: non-finite gradient in {len(bad)} LoRA weight(s), first {bad[0]}")
    missing = [n for n, p in params.items() if p.grad is None]
    if missing:
        raise RuntimeError(f"step {step}: no gradient reached {len(missing)} LoRA weight(s), first {missing[0]}")


CHECKS: dict[str, Callable[[dict[str, nn.Parameter], int], None]] = {
    "per_weight": per_weight_check, "total_norm": F.check_grads,
}


def study_like_batch(vocab: int, device: torch.device, rows: int = 8, seed: int = 0) -> Batch:
    """Random ids: prompts of 50 tokens, completions of 80-185, left-padded as the study pads."""
    g = torch.Generator().manual_seed(seed)
    comp_lens = torch.linspace(80, 185, rows).round().long().tolist()
    prompts = [torch.randint(10, vocab, (50,), generator=g).tolist() for _ in range(rows)]
    comps = [torch.randint(10, vocab, (n,), generator=g).tolist() for n in comp_lens]
    return make_batch(prompts, comps, pad_id=0).to(device)


def measure(model: nn.Module, batch: Batch, check: str, precision: str, warmup: int, steps: int) -> dict[str, Any]:
    device = batch.input_ids.device
    params = F.lora_parameters(model)  # the weights carry over between variants: timing does not depend on them
    opt = torch.optim.AdamW(list(params.values()), lr=1e-4)
    fn = CHECKS[check]

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.batch_loss(model, batch)
        loss.backward()
        fn(params, 0)
        opt.step()
        return float(loss.detach())

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        model.train()
        for _ in range(warmup):
            step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()  # float(loss) waits for the device
            times.append(time.perf_counter() - t0)
        prof = device_profile(step, device, reps=2)
    finally:
        torch.set_float32_matmul_precision(before)
    return {"check": check, "matmul_precision": precision, "step_median_s": statistics.median(times),
            "step_times_s": times, "device_profile": prof}


@click.command()
@click.option("--shape", type=click.Choice(sorted(SHAPES)), default="1.5b", show_default=True)
@click.option("--device", default="cuda", show_default=True)
@click.option("--precision", "precisions", multiple=True, default=["highest", "high"], show_default=True,
              type=click.Choice(["highest", "high"]), help="torch float32 matmul precision ('high' = TF32 on CUDA).")
@click.option("--warmup", default=2, show_default=True)
@click.option("--steps", default=10, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(shape: str, device: str, precisions: tuple[str, ...], warmup: int, steps: int, out: Path) -> None:
    dev = torch.device(device)
    torch.manual_seed(0)
    model = qwen7b_shape(torch.float32, device, **SHAPES[shape])
    ft = FinetuneConfig()
    model = get_peft_model(model, LoraConfig(r=ft.rank, lora_alpha=ft.alpha, lora_dropout=ft.dropout,
                                             target_modules=list(ft.target_modules)))
    batch = study_like_batch(SHAPES[shape]["vocab_size"], dev)
    result: dict[str, Any] = {
        "command": " ".join(sys.argv), "shape": shape, "weights": "random", "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(), "lora_weights": len(F.lora_parameters(model)),
        "tokens_real": int(batch.attention_mask.sum()), "tokens_padded": int(batch.input_ids.numel()),
        "runs": [],
    }
    # interleaved: each (precision, check) in turn, twice, so drift of a shared machine hits all alike
    for _ in range(2):
        for precision in precisions:
            for check in CHECKS:
                result["runs"].append(measure(model, batch, check, precision, warmup, steps))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for r in result["runs"]:
        dp = r["device_profile"]
        print(f"{r['matmul_precision']:8s} {r['check']:10s} step {r['step_median_s']:.4f} s  kernels "
              f"{dp['kernel_s']:.4f} s  busy {dp['device_busy']:.2f}  launched {dp['kernels_launched']}  "
              f"syncs {dp['host_syncs']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
