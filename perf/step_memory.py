"""What a grouped training step keeps for its backward pass, per run, by category; measured on the CPU.

Issue 24 item 2: on an H100 the grouped executor measured 15.0 GB per run over a 22.1 GB one-run step, so
only K = 3 of a seed's 10 runs fit in one pass. This builds a random Qwen2 of the study model's real widths
(Qwen2.5-Coder-1.5B: d_model 1536, MLP 8960, 12 query / 2 KV heads of 128, vocab 151936) with few decoder
layers, attaches grouped LoRA (rank and target modules from ``FinetuneConfig``) for K = 1 and K = 2 runs,
runs one training forward (:func:`nnsight_inoc.train.grouped.grouped_loss`, fp32, train mode) on K row blocks
of ``rows`` x ``tokens``, and counts every tensor autograd saves for the backward pass
(``torch.autograd.graph.saved_tensors_hooks``; storages deduplicated by data pointer, parameters excluded),
attributed to the innermost module running when it was saved (forward pre-/post-hooks). Under activation
checkpointing the checkpointed blocks save nothing but keep their inputs alive; those inputs are counted
as the block's (their storages, deduplicated like the rest).

Per category (attention, mlp, norms, lora, logits_loss, embeddings, other) the bytes are extrapolated to
``--full-layers`` decoder layers as ``outside the layers + layer 0 + (full - 1) x last layer`` (layer 0
holds what the layers share, e.g. the attention mask and RoPE tables), and the per-run bytes are those of
K = 2 minus K = 1. Also reported: the live logits tensor (not saved, but alive at the forward's end), the
largest checkpointed block's saved bytes (what its recomputation holds for a moment in the backward pass),
and the median wall time of full training steps (forward, backward, AdamW) per level, on this CPU (the
levels interleaved step by step).

    python perf/step_memory.py --out results/bench/step_memory_cpu.json
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from nnsight_inoc.core.config import FinetuneConfig
from nnsight_inoc.models.checkpointing import LEVELS, activation_checkpointing, checkpointed_blocks
from nnsight_inoc.trace.chat import Batch, make_batch
from nnsight_inoc.train import grouped as G
from perf.bench import qwen7b_shape

QWEN15B = dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
               vocab_size=151936)
TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, vocab_size=500)
CATEGORIES = ("attention", "mlp", "norms", "lora", "logits_loss", "embeddings", "other")
_LAYER = re.compile(r"\.layers\.(\d+)(\.|$)")


def category(module: str, lora_modules: set[str]) -> str:
    """The category of a saved tensor by the innermost module that saved it ('' = outside every module)."""
    if module in lora_modules:
        return "lora"  # a frozen Linear saves only its weight; what a target Linear's call saves is its LoRA's
    leaf = module.split(".")
    if "mlp" in leaf:
        return "mlp"
    if "self_attn" in leaf or "rotary_emb" in leaf:
        return "attention"
    if leaf[-1].endswith("norm"):
        return "norms"
    if leaf[-1] == "embed_tokens":
        return "embeddings"
    if leaf[-1] == "lm_head" or module == "":
        return "logits_loss"
    return "other"


def layer_of(module: str) -> int | None:
    """Decoder layer index of a module name, None outside the layers."""
    m = _LAYER.search(module)
    return int(m.group(1)) if m else None


def study_batch(vocab: int, runs: int, rows: int, tokens: int, completion: tuple[int, int], seed: int = 0) -> Batch:
    """K = ``runs`` identical row blocks of ``rows`` random rows, each ``tokens`` long after left padding: prompts
    of ``tokens - completion[1]`` ids, completions of ``completion[0]`` .. ``completion[1]`` ids (linearly spread)."""
    lo, hi = completion
    if not 1 <= lo <= hi < tokens:
        raise click.BadParameter(f"need 1 <= completion min <= max < tokens, got {completion} and {tokens}")
    g = torch.Generator().manual_seed(seed)
    lens = torch.linspace(lo, hi, rows).round().long().tolist()
    prompts = [torch.randint(10, vocab, (tokens - hi,), generator=g).tolist() for _ in range(rows)]
    comps = [torch.randint(10, vocab, (n,), generator=g).tolist() for n in lens]
    return make_batch(prompts * runs, comps * runs, pad_id=0)


class SavedTensorLedger:
    """Bytes of the storages autograd saves, by (layer, category); storages counted once, parameters never.

    Use as a context manager around one forward pass of ``model`` (with ``grouped`` attached before entering,
    so its hooks run inside the target modules' calls). ``checkpointed`` names blocks whose tensor inputs a
    non-reentrant checkpoint keeps alive (counted as saved by that block).
    """

    def __init__(self, model: nn.Module, grouped: G.GroupedLora, checkpointed: set[str]) -> None:
        self.model, self.lora = model, set(grouped.names)
        self.checkpointed = checkpointed
        self.skip = {p.untyped_storage().data_ptr() for p in [*model.parameters(), *model.buffers(),
                                                              *grouped.parameters()]}
        self.seen: dict[int, torch.UntypedStorage] = {}  # strong refs: no storage freed and reused meanwhile
        self.bytes: dict[tuple[int | None, str], int] = defaultdict(int)
        self.blocks: dict[str, int] = defaultdict(int)  # per checkpointable block (layer.i.mlp / self_attn)
        self.stack: list[str] = [""]
        self.logits_live = 0
        self._handles: list[Any] = []
        self._hooks: Any = None

    def _add(self, t: torch.Tensor, module: str) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr in self.skip or ptr in self.seen or st.nbytes() == 0:
            return
        self.seen[ptr] = st
        self.bytes[(layer_of(module), category(module, self.lora))] += st.nbytes()
        block = re.search(r"(.*\.layers\.\d+\.(mlp|self_attn))(\.|$)", module)
        if block:
            self.blocks[block.group(1)] += st.nbytes()

    def __enter__(self) -> SavedTensorLedger:
        for name, mod in self.model.named_modules():
            self._handles.append(mod.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self._handles.append(mod.register_forward_hook(self._post, always_call=True))
        self._handles.append(self.model.get_output_embeddings().register_forward_hook(self._logits))

        def pack(t: torch.Tensor) -> torch.Tensor:
            self._add(t, self.stack[-1])
            return t

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)
        for h in self._handles:
            h.remove()
        self.seen.clear()

    def _pre(self, name: str) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.stack.append(name)
            if name in self.checkpointed and torch.is_grad_enabled():
                for x in [*args, *kwargs.values()]:
                    for t in (x if isinstance(x, (tuple, list)) else (x,)):
                        self._add(t, name)

        return hook

    def _post(self, *_: Any) -> None:
        self.stack.pop()

    def _logits(self, _m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        self.logits_live = max(self.logits_live, out.untyped_storage().nbytes())

    def extrapolated(self, n_layers: int, full: int) -> dict[str, int]:
        """Bytes by category for ``full`` decoder layers: outside + layer 0 + (full - 1) x layer n_layers - 1."""
        out = {}
        for c in CATEGORIES:
            outside, first, last = (self.bytes.get((i, c), 0) for i in (None, 0, n_layers - 1))
            out[c] = outside + first + (full - 1) * last if n_layers > 1 else outside + full * first
        return out


def account_step(model: nn.Module, level: str, runs: int, batch: Batch, ft: FinetuneConfig,
                 full: int) -> dict[str, Any]:
    """One training forward of ``runs`` grouped runs under ``level``: saved bytes by category (extrapolated)."""
    n_layers = len(model.model.layers)
    with torch.random.fork_rng():
        g = G.fresh(model, runs, ft.rank, ft.alpha, ft.target_modules, ft.dropout)
    names = {n for n, _ in checkpointed_blocks(model, level)}
    model.train()
    with activation_checkpointing(model, level), g.attached(model, batch.size // runs):
        with SavedTensorLedger(model, g, names) as ledger:
            losses = G.grouped_loss(model, batch, runs)
        cats = ledger.extrapolated(n_layers, full)
    del losses
    last = f"model.layers.{n_layers - 1}."
    return {"runs": runs, "by_category": cats, "total": sum(cats.values()), "logits_live": ledger.logits_live,
            "blocks_last_layer": {k.rsplit(".", 1)[-1]: v for k, v in ledger.blocks.items() if k.startswith(last)}}


def step_times(model: nn.Module, levels: tuple[str, ...], batch: Batch, runs: int, ft: FinetuneConfig,
               steps: int) -> dict[str, list[float]]:
    """Wall seconds of ``steps`` full grouped training steps per level (forward, backward, AdamW), the levels
    interleaved step by step (so a shared machine's load hits them alike), after one warm-up round."""
    with torch.random.fork_rng():
        g = G.fresh(model, runs, ft.rank, ft.alpha, ft.target_modules, ft.dropout)
    opt = torch.optim.AdamW(g.parameters(), lr=ft.lr)
    times: dict[str, list[float]] = {lv: [] for lv in levels}
    for i in range(steps + 1):
        for level in levels:
            t0 = time.perf_counter()
            G.train_step(g, model, opt, batch, i, checkpointing=level)
            if i:
                times[level].append(time.perf_counter() - t0)
    return times


def cuda_peaks(model: nn.Module, levels: tuple[str, ...], ks: tuple[int, ...], vocab: int, rows: int, tokens: int,
               completion: tuple[int, int], ft: FinetuneConfig, steps: int) -> dict[str, Any]:
    """On CUDA: peak allocated bytes of one full grouped training step (forward, backward, AdamW) of K runs, and the
    median seconds of ``steps`` more, per level and K (TF32 matmuls, as the decisive sweep trains). Measured, not
    extrapolated: the model is built at its full depth."""
    device = next(model.parameters()).device
    torch.backends.cuda.matmul.allow_tf32 = True
    out: dict[str, Any] = {}
    for level in levels:
        for k in ks:
            batch = study_batch(vocab, k, rows, tokens, completion).to(device)
            with torch.random.fork_rng(devices=[device]):
                g = G.fresh(model, k, ft.rank, ft.alpha, ft.target_modules, ft.dropout)
            opt = torch.optim.AdamW(g.parameters(), lr=ft.lr)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            try:
                G.train_step(g, model, opt, batch, 0, checkpointing=level)
                peak = torch.cuda.max_memory_allocated(device)
                times = []
                for i in range(steps):
                    torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    G.train_step(g, model, opt, batch, i + 1, checkpointing=level)  # its loss is read: synced
                    times.append(time.perf_counter() - t0)
                rec: dict[str, Any] = {"peak_bytes": peak, "step_s": times,
                                       "step_s_median": statistics.median(times) if times else None}
            except torch.OutOfMemoryError as err:
                rec = {"out_of_memory": str(err).splitlines()[0]}
            out[f"{level}_k{k}"] = rec
            print(f"{level:9s} K={k:2d} " + (f"peak {rec['peak_bytes'] / 1e9:6.2f} GB, step {rec['step_s_median']}"
                                             if "peak_bytes" in rec else "out of memory"), flush=True)
            del g, opt, batch
    return out


@click.command()
@click.option("--shape", type=click.Choice(["1.5b", "tiny"]), default="1.5b", show_default=True,
              help="'1.5b': the study model's widths; 'tiny': for tests.")
@click.option("--layers", default=2, show_default=True,
              help="Decoder layers built (>= 2: layer 0 holds shared tensors).")
@click.option("--full-layers", default=28, show_default=True, help="Decoder layers to extrapolate to.")
@click.option("--rows", default=8, show_default=True, help="Rows per run (finetune.batch_size = align.batch_size).")
@click.option("--tokens", default=256, show_default=True, help="Padded tokens per row.")
@click.option("--completion", nargs=2, type=int, default=(80, 185), show_default=True,
              help="Shortest and longest completion (tokens); the loss window is the longest.")
@click.option("--level", "levels", multiple=True, type=click.Choice(list(LEVELS)), default=list(LEVELS),
              show_default=True)
@click.option("--time-steps", default=2, show_default=True,
              help="Timed training steps per level (K = 1, levels interleaved); 0 = none.")
@click.option("--account/--no-account", default=True, show_default=True, help="Count the saved tensors.")
@click.option("--device", default="cpu", show_default=True,
              help="'cuda': also measure each level's peak memory and step time at every --peak-k, full depth.")
@click.option("--peak-k", default="1,2,10", show_default=True, help="With --device cuda: group sizes measured.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(shape: str, layers: int, full_layers: int, rows: int, tokens: int, completion: tuple[int, int],
         levels: tuple[str, ...], time_steps: int, account: bool, device: str, peak_k: str, out: Path) -> None:
    if layers < 2:
        raise click.BadParameter("build at least 2 layers (layer 0 holds what every layer shares)",
                                 param_hint="--layers")
    dims = QWEN15B if shape == "1.5b" else TINY
    torch.manual_seed(0)
    model = qwen7b_shape(torch.float32, device, num_hidden_layers=layers, **dims)
    ft = FinetuneConfig()
    result: dict[str, Any] = {
        "command": " ".join(sys.argv), "device": device, "torch": torch.__version__,
        "card": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "torch_threads": torch.get_num_threads(), "model": {"shape": shape, **dims, "layers_built": layers,
                                                            "layers_extrapolated_to": full_layers, "dtype": "float32"},
        "lora": {"rank": ft.rank, "target_modules": ft.target_modules},
        "batch_per_run": {"rows": rows, "tokens": tokens, "completion_tokens": list(completion)},
        "method": "saved_tensors_hooks over one grouped training forward (train mode); storages deduplicated by data "
                  "pointer, parameters excluded; checkpointed blocks' inputs counted; extrapolated as outside + "
                  "layer 0 + (full - 1) x last layer; per run = K=2 minus K=1",
        "levels": {},
    }
    for level in levels if account else ():
        one, two = (account_step(model, level, k, study_batch(dims["vocab_size"], k, rows, tokens, completion), ft,
                                 full_layers) for k in (1, 2))
        per_run = {c: two["by_category"][c] - one["by_category"][c] for c in CATEGORIES}
        result["levels"][level] = {
            "per_run_bytes": per_run, "per_run_total": sum(per_run.values()),
            "logits_live_per_run": two["logits_live"] - one["logits_live"],
            "blocks_last_layer_per_run": {b: two["blocks_last_layer"].get(b, 0) - v
                                          for b, v in one["blocks_last_layer"].items()},
            "k1": one, "k2": two}
        print(f"{level:9s} per run {sum(per_run.values()) / 1e9:6.2f} GB  "
              + "  ".join(f"{c} {b / 1e9:.2f}" for c, b in per_run.items()), flush=True)
    if device.startswith("cuda"):
        result["cuda_peaks"] = cuda_peaks(model, levels, tuple(int(k) for k in peak_k.split(",")), dims["vocab_size"],
                                          rows, tokens, completion, ft, time_steps)
    elif time_steps:
        ts = step_times(model, levels, study_batch(dims["vocab_size"], 1, rows, tokens, completion), 1, ft,
                        time_steps)
        result["step_s_k1"] = {lv: {"median": statistics.median(t), "all": t} for lv, t in ts.items()}
        print("step (K = 1) median s: " + "  ".join(f"{lv} {statistics.median(t):.2f}" for lv, t in ts.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
