"""Where one LoRA training step of the study goes, on the study's own batches, per training precision.

Issue 7: a study step took 0.70 s on an H100 (fp32, 8 ALL-CAPS examples) against the bench's 0.27 s
for a synthetic 8 x 200-token batch. This script times the study's real steps (the run folder's SFT
set, the seed-0 order, the neutral prompt, the config's LoRA modules) phase by phase, with the
device synchronised between phases:

* ``encode``: tokenising the 8 chats and the copy to the device (host work);
* ``forward`` (the loss), ``backward``, ``check_grads`` (the per-weight NaN check), ``optimizer``;
* ``train_step``: :func:`finetune.train_step` itself, unsynchronised inside, as the study runs it;

plus the tokens per step (real and padded), the achieved FLOP rate (4 N per real token, as ``bench``)
against matmul rates measured in the same process (fp32, TF32, bf16 8192-cubes), and a
:func:`bench.device_profile` of ``train_step`` (device busy fraction, kernels, host syncs).

Usage (on the GPU, after ``extract``/``align`` in the run folder; the config's precision is replaced
by each ``--policy`` in turn)::

    python perf/profile_train_step.py --config gpu/allcaps_gpu.toml --run-dir RUN_DIR \\
        --policy model --policy tf32 --out profile_train_step.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import click
import torch

from nnsight_inoc.core.config import load_config
from nnsight_inoc.stages.finetune import precision
from nnsight_inoc.study import ensure_sft, open_study
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.train import lora as F
from nnsight_inoc.train.order import step_order
from perf.bench import device_profile, matmul_params, matmul_rate, timed_call


def profile_policy(study: Any, sft: Any, policy: str, warmup: int, steps: int) -> dict[str, Any]:
    """Phase times of ``steps`` real study steps (after ``warmup``) under one training precision."""
    study.cfg.finetune.train_autocast = policy
    device = study.tlm.device
    prec = precision(study)
    prec.check(device)
    cfg = study.cfg.finetune
    tok = study.loaded.tokenizer
    system = study.cfg.align.conditions["neutral"]
    order = step_order(len(sft.prompts), 0, warmup + 2 * steps, cfg.batch_size)
    torch.manual_seed(0)
    model = F.make_lora_model(study.loaded.hf_model, cfg)
    params = F.lora_parameters(model)
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def encode(idx: list[int]) -> Any:
        return encode_chats(tok, system, [sft.prompts[i] for i in idx], [sft.completions[i] for i in idx],
                            n_assistant=study.cfg.align.n_assistant_tokens).to(device)

    phases: dict[str, list[float]] = {k: [] for k in ("encode", "forward", "backward", "check_grads", "optimizer")}
    real, padded, losses = [], [], []
    for i, idx in enumerate(order[: warmup + steps]):
        batch, t_enc = timed_call(lambda: encode(idx), device)
        opt.zero_grad(set_to_none=True)
        with prec.matmul_precision(device):
            with prec.autocast(device):
                loss, t_fwd = timed_call(lambda: F.batch_loss(model, batch), device)
            _, t_bwd = timed_call(loss.backward, device)
        _, t_chk = timed_call(lambda: F.check_grads(params, i), device)
        _, t_opt = timed_call(opt.step, device)
        if i >= warmup:
            for k, t in zip(phases, (t_enc, t_fwd, t_bwd, t_chk, t_opt)):
                phases[k].append(t)
            real.append(int(batch.attention_mask.sum()))
            padded.append(int(batch.input_ids.numel()))
            losses.append(float(loss.detach()))
    # train_step as the study calls it (encode included, one sync at the loss's float()), on the next batches
    whole = []
    for idx in order[warmup + steps:]:
        _, t = timed_call(lambda: F.train_step(model, opt, params,
                                           encode_chats(tok, system, [sft.prompts[i] for i in idx],
                                                        [sft.completions[i] for i in idx],
                                                        n_assistant=study.cfg.align.n_assistant_tokens), 0, prec), device)
        whole.append(t)
    idx0 = order[0]
    prof = device_profile(lambda: F.train_step(model, opt, params, encode(idx0), 0, prec), device, reps=3)
    med = {k: statistics.median(v) for k, v in phases.items()}
    step_s = statistics.median(whole)
    n_real = statistics.mean(real)
    out = {
        "policy": policy, "steps_timed": steps, "phase_median_s": med, "phase_sum_s": sum(med.values()),
        "train_step_median_s": step_s, "train_step_times_s": whole,
        "tokens_per_step_real": n_real, "tokens_per_step_padded": statistics.mean(padded),
        "padding_waste": 1 - sum(real) / sum(padded),
        "real_tokens_per_s": n_real / step_s, "flops_per_s": 4 * matmul_params(study.loaded.hf_model) * n_real / step_s,
        "losses": losses, "device_profile_train_step": prof,
        "peak_cuda_memory_gb": (torch.cuda.max_memory_allocated(device) / 1e9) if device.type == "cuda" else None,
    }
    return out  # the LoRA model, optimizer and batches go with this frame; main() empties the CUDA cache


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--run-dir", type=click.Path(file_okay=False), required=True)
@click.option("--policy", "policies", multiple=True, default=["model", "tf32"], show_default=True,
              type=click.Choice(["model", "bfloat16", "tf32"]), help="finetune.train_autocast values to profile.")
@click.option("--warmup", default=2, show_default=True)
@click.option("--steps", default=10, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def main(config_path: str, run_dir: str, policies: tuple[str, ...], warmup: int, steps: int, out: str) -> None:
    cfg = load_config(config_path)
    study = open_study(cfg, Path(run_dir), " ".join(sys.argv), provenance="profile_train_step")
    sft = ensure_sft(study)
    device = study.tlm.device
    result: dict[str, Any] = {
        "config": config_path, "model": study.loaded.name, "dtype": study.loaded.dtype,
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "lora_targets": list(cfg.finetune.target_modules), "batch_size": cfg.finetune.batch_size,
        "flop_note": "4*N per real (unpadded) token, N = matmul parameters incl. lm_head; LoRA matmuls not counted",
    }
    if device.type == "cuda":
        before = torch.get_float32_matmul_precision()
        result["matmul_rate_flops_per_s"] = {"float32": matmul_rate(device, dtype=torch.float32)}
        torch.set_float32_matmul_precision("high")
        try:
            result["matmul_rate_flops_per_s"]["tf32"] = matmul_rate(device, dtype=torch.float32)
        finally:
            torch.set_float32_matmul_precision(before)
        result["matmul_rate_flops_per_s"]["bfloat16"] = matmul_rate(device, dtype=torch.bfloat16)
    result["policies"] = {}
    for p in policies:  # a policy that goes non-finite (bf16 autocast did in the study) is recorded, not fatal
        try:
            result["policies"][p] = profile_policy(study, sft, p, warmup, steps)
        except NonFiniteError as err:
            result["policies"][p] = {"policy": p, "error": f"NonFiniteError: {err}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(json.dumps(result, indent=1, default=str))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
