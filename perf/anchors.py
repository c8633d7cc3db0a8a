"""The clock's anchors (issue 24, item 6): what the card can do, what the training steps achieve, and the grouped
step against one PEFT run, measured in the same process so the ratios are seen, not remembered.

* :func:`matmul_rate`: the card's measured dense matmul rate (TFLOP/s) in the training steps' precision.
* :func:`step_flops` / :func:`plan_step_flops`: the matmul FLOPs of LoRA training steps on a frozen base, by a
  formula pinned against ``torch.utils.flop_counter.FlopCounterMode`` on a tiny model
  (``tests/perf/test_anchors.py``); dividing by the steps' measured seconds gives the achieved rate.
* :func:`peft_vs_grouped`: milliseconds per run-step of one PEFT run at a time (the sequential executor's
  step, on a deep copy of the base) and of the grouped step at K = 1 and K = every given run, on the same batches.

    PYTHONPATH=. python perf/anchors.py --config gpu/decisive_allcaps.toml --run-dir RUN --out anchors.json

``RUN`` must hold the direction and the SFT answers (extract and the SFT set; a campaign's run folder does).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, precision: str, n: int = 8192, repeats: int = 20) -> dict[str, Any]:
    """Median TFLOP/s of an (n, n) @ (n, n) matmul on ``device``: 2 n^3 FLOPs per product.

    ``precision``: 'fp32' (TF32 off), 'tf32' (fp32 tensors, TF32 matmuls: the training steps' setting) or
    'bf16'. ValueError for another value. The first product is a warm-up and is not timed.
    """
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision must be fp32, tf32 or bf16, got {precision!r}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        (a @ b).sum().item()
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            a @ b
            _sync(device)
            times.append(time.perf_counter() - t0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    med = statistics.median(times)
    return {"precision": precision, "n": n, "repeats": repeats, "median_s": med, "tflops": 2 * n**3 / med / 1e12}


def _decoder_linears(model: nn.Module) -> list[nn.Linear]:
    """Every nn.Linear inside the decoder layers (the lm_head is counted apart: it sees the loss window only)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no .model.layers: not a decoder-only causal LM this counts")
    return [m for m in layers.modules() if isinstance(m, nn.Linear)]


def step_flops(model: nn.Module, rows: int, seq_len: int, window: int, lora_rank: int,
               lora_targets: Sequence[str], checkpointing: str = "none") -> dict[str, float]:
    """Matmul FLOPs of one LoRA training step (forward + backward) of ``rows`` padded rows of ``seq_len`` tokens.

    Frozen base: every decoder Linear costs 2 in*out FLOPs per token forward and 2 in*out backward (the input
    gradient; no weight gradient). Attention: Q K^T and A V cost 2 T d_q each per token forward over the whole
    padded length T (a masked SDPA computes the square), twice that backward. The lm_head sees the last
    ``window`` positions only (``logits_to_keep``): 2 d V each way. LoRA on the modules named ``lora_targets``:
    2 r (in + out) per token forward, twice that backward (input and weight gradients). Elementwise work
    (norms, activations, softmax, the loss) is left out; it is not matmul work. Activation checkpointing
    (``checkpointing``: 'mlp' or 'attn_mlp', :mod:`nnsight_inoc.models.checkpointing`) adds one more forward of the
    recomputed blocks (their linears, LoRA updates and, for 'attn_mlp', attention) as 'recompute'. The first layer's attention
    input needs no gradient (the embeddings are frozen), which this counts anyway (and, where k/v carry no LoRA,
    layer 0's key and value gradients): an overcount of 1.4-2.1% for a 6-layer tiny model, a sixth of that or less
    at 28 layers (pinned within 3% against ``FlopCounterMode`` with eager attention in ``tests/perf/test_anchors.py``). Returns the parts and 'total'.
    """
    config = model.config
    d = config.hidden_size
    heads = config.num_attention_heads
    d_q = heads * (getattr(config, "head_dim", None) or d // heads)
    linears = _decoder_linears(model)
    tokens = rows * seq_len
    base = sum(m.in_features * m.out_features for m in linears)
    lora = sum(m.in_features + m.out_features for name, m in _named_decoder_linears(model)
               if any(name == t or name.endswith("." + t) for t in lora_targets))
    head = model.get_output_embeddings()
    vocab = head.out_features
    blocks = {"none": (), "mlp": (".mlp.",), "attn_mlp": (".mlp.", ".self_attn.")}[checkpointing]
    named = _named_decoder_linears(model)

    def recomputed(name: str) -> bool:
        return any(b in f".{name}" for b in blocks)

    re_base = sum(m.in_features * m.out_features for n, m in named if recomputed(n))
    re_lora = sum(m.in_features + m.out_features for n, m in named if recomputed(n)
                  and any(n == t or n.endswith("." + t) for t in lora_targets))
    re_attn = 4.0 * seq_len * d_q * tokens * config.num_hidden_layers if ".self_attn." in blocks else 0.0
    out = {
        "decoder_linears": 4.0 * base * tokens,
        "attention": 3 * 4.0 * seq_len * d_q * tokens * config.num_hidden_layers,
        "lm_head": 4.0 * d * vocab * rows * window,
        "lora": 6.0 * lora_rank * lora * tokens,
        "recompute": 2.0 * re_base * tokens + 2.0 * lora_rank * re_lora * tokens + re_attn,
    }
    out["total"] = sum(out.values())
    return out


def _named_decoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    inner = getattr(model, "model", model)
    return [(n, m) for n, m in inner.layers.named_modules() if isinstance(m, nn.Linear)]


def plan_step_flops(study: Any, plan: Any, runs: Sequence[Any]) -> dict[str, Any]:
    """Matmul FLOPs of every training step of ``runs`` (one seed) trained together, from the steps' own batches.

    Each step's batch is built as the grouped executor builds it (``stages.grouped.step_batch``), so padding,
    the loss window and the runs' prompts are the real ones. Returns the total and the token count.
    """
    from nnsight_inoc.stages.grouped import step_batch
    from nnsight_inoc.trace.loss import loss_targets
    from nnsight_inoc.train.order import step_order

    cfg = study.cfg.finetune
    order = step_order(len(plan.sft.prompts), runs[0].seed, cfg.steps, cfg.batch_size)
    total, tokens = 0.0, 0
    for idx in order:
        batch = step_batch(study, plan.sft, runs, idx)
        rows, seq = batch.input_ids.shape
        window = loss_targets(batch).window
        total += step_flops(study.loaded.hf_model, rows, seq, window, cfg.rank, cfg.target_modules,
                            study.cfg.execution.activation_checkpointing)["total"]
        tokens += rows * seq
    return {"flops": total, "padded_tokens": tokens, "steps": len(order), "runs": [r.name for r in runs]}


def peft_vs_grouped(study: Any, plan: Any, runs: Sequence[Any], steps: int = 5) -> dict[str, Any]:
    """Median ms per run-step: one PEFT run (deep copy of the base, the sequential executor's step), the grouped
    step at K = 1 and at K = len(runs), on the first ``steps`` batches of the seed's order (after one warm-up). The
    grouped steps use the study's ``execution.activation_checkpointing``, as its sweep does; the PEFT step has none."""
    from nnsight_inoc.stages.finetune import precision, rows_of
    from nnsight_inoc.stages.grouped import step_batch
    from nnsight_inoc.trace.chat import encode_chats
    from nnsight_inoc.train import grouped as G
    from nnsight_inoc.train.lora import lora_parameters, make_lora_model, seeded, train_step
    from nnsight_inoc.train.order import step_order

    cfg, sft, device = study.cfg.finetune, plan.sft, study.tlm.device
    prec = precision(study)
    order = step_order(len(sft.prompts), runs[0].seed, cfg.steps, cfg.batch_size)[: steps + 1]
    base = study.loaded.hf_model

    def timed(step_fn: Any) -> list[float]:
        out = []
        for i, idx in enumerate(order):
            _sync(device)
            t0 = time.perf_counter()
            step_fn(i, idx)
            _sync(device)
            if i:  # the first step warms up kernels and the allocator
                out.append(time.perf_counter() - t0)
        return out

    ckpt = study.cfg.execution.activation_checkpointing  # the grouped step as the sweep runs it
    res: dict[str, Any] = {"steps_timed": steps, "rows_per_run": cfg.batch_size, "activation_checkpointing": ckpt}
    run0 = runs[0]
    tok, k_assist = study.loaded.tokenizer, study.cfg.align.n_assistant_tokens

    def peft_times() -> list[float]:  # its own scope: the deep copy is freed before the grouped steps
        with seeded(run0.seed, device):
            model = make_lora_model(base, cfg)
        params = lora_parameters(model)
        opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr)

        def peft_step(i: int, idx: list[int]) -> None:
            batch = encode_chats(tok, rows_of(plan.sft_systems(run0), idx), [sft.prompts[j] for j in idx],
                                 [sft.completions[j] for j in idx], n_assistant=k_assist)
            train_step(model, opt, params, batch, i, prec)

        return timed(peft_step)

    res["peft_one_run_ms"] = 1e3 * statistics.median(peft_times())
    for label, group in (("grouped_k1_ms_per_run", runs[:1]), ("grouped_kall_ms_per_run", list(runs))):
        g = G.fresh(base, len(group), cfg.rank, cfg.alpha, cfg.target_modules, cfg.dropout)
        gopt = torch.optim.AdamW(g.parameters(), lr=cfg.lr)

        def grouped_step(i: int, idx: list[int], g: Any = g, gopt: Any = gopt, group: Any = group) -> None:
            G.train_step(g, base, gopt, step_batch(study, sft, group, idx), i, prec, checkpointing=ckpt)

        res[label] = 1e3 * statistics.median(timed(grouped_step)) / len(group)
        del g, gopt
    base.eval()
    res["k_all"] = len(runs)
    res["grouped_kall_over_peft"] = res["grouped_kall_ms_per_run"] / res["peft_one_run_ms"]
    res["note"] = ("ms per run-step: one PEFT run's step; the grouped step's time divided by its K. Intervention "
                   "arms are not among the timed runs (their step adds an nnsight trace).")
    return res


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--run-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--steps", default=5, show_default=True, help="Timed steps per arrangement (after one warm-up).")
@click.option("--matmul-n", default=8192, show_default=True, help="Side of the square matmul timed for the card's rate.")
def main(config_path: str, run_dir: Path, out: Path, steps: int, matmul_n: int) -> None:
    """Write the anchors of RUN_DIR's study (its plan's first seed, unsteered runs without an intervention)."""
    from nnsight_inoc.core import artifacts as A
    from nnsight_inoc.core.config import load_config
    from nnsight_inoc.stages.plan import build_plan
    from nnsight_inoc.study import open_study

    study = open_study(load_config(config_path), run_dir, " ".join(sys.argv), provenance="anchors")
    plan = build_plan(study, study.cfg.finetune.which)
    seed_runs = next(iter(plan.by_seed().values()))
    runs = [r for r in seed_runs if r.steer is None and r.intervene is None]
    device = study.tlm.device
    prec_name = "tf32" if study.cfg.finetune.train_autocast == "tf32" else "fp32"
    res = {"matmul": matmul_rate(device, prec_name, n=matmul_n),
           "step_flops_one_group": plan_step_flops(study, plan, runs),
           "peft_vs_grouped": peft_vs_grouped(study, plan, runs, steps),
           "device": A.device_info(), "git": A.git_info(), "versions": A.versions(), "command": " ".join(sys.argv)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    p = res["peft_vs_grouped"]
    click.echo(f"matmul {res['matmul']['tflops']:.1f} TFLOP/s ({prec_name}); PEFT {p['peft_one_run_ms']:.1f} ms/step, "
               f"grouped K={p['k_all']} {p['grouped_kall_ms_per_run']:.1f} ms per run-step; wrote {out}")


if __name__ == "__main__":
    main()
