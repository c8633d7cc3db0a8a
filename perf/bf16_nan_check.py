"""Is the bf16 training NaN the cuDNN attention backward? Train the same steps with cuDNN SDPA on and off.

Issue 17: bf16 autocast training of the ALL-CAPS inoculation run gave non-finite LoRA gradients
at step 4 (results/bench/README.md). A public PyTorch report describes NaN in cuDNN attention's
backward on Hopper from torch 2.11 on, when an explicit attention mask, a sequence length
= 64 (mod 128) and very negative scores meet; Qwen2.5 has such scores and the study's left-padded
batches carry an explicit mask. This trains one run's first steps (same examples, order and LoRA
init as the study) under bf16 autocast twice, with ``torch.backends.cuda.enable_cudnn_sdp`` on and
off, and records for every step the padded length T, T mod 128, the loss and whether the step
was finite (the study's own NaN guard decides). Each variant stops at its first non-finite step.

    PYTHONPATH=. python perf/bf16_nan_check.py --config gpu/allcaps_gpu.toml --run-dir RUN_DIR \
        --condition inoc --steps 12 --out bf16_nan_check.json

Needs ``extract`` and ``align`` in RUN_DIR (the plan's direction and SFT set). CUDA only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import torch

from nnsight_inoc.core.config import apply_overrides, load_config
from nnsight_inoc.stages.finetune import precision
from nnsight_inoc.stages.grouped import step_batch
from nnsight_inoc.stages.plan import build_plan
from nnsight_inoc.study import open_study
from nnsight_inoc.trace.loss import NonFiniteError
from nnsight_inoc.train import lora as F
from nnsight_inoc.train.order import step_order


def train_steps(study: Any, run: Any, sft: Any, steps: int) -> list[dict[str, Any]]:
    """The run's first ``steps`` bf16-autocast steps; one record per step, stopping at the first non-finite one."""
    cfg, device = study.cfg.finetune, study.tlm.device
    order = step_order(len(sft.prompts), run.seed, cfg.steps, cfg.batch_size)
    prec = precision(study)
    out = []
    with F.seeded(run.seed, device):
        model = F.make_lora_model(study.loaded.hf_model, cfg)
        params = F.lora_parameters(model)
        opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr)
        for step in range(steps):
            batch = step_batch(study, sft, [run], order[step])
            T = int(batch.input_ids.shape[1])
            rec: dict[str, Any] = {"step": step, "T": T, "T_mod_128": T % 128}
            try:
                rec["loss"] = F.train_step(model, opt, params, batch, step, prec)
                rec["finite"] = True
            except NonFiniteError as err:
                rec.update(finite=False, error=str(err))
                out.append(rec)
                break
            out.append(rec)
    del model, opt
    torch.cuda.empty_cache()
    return out


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--run-dir", type=click.Path(file_okay=False), required=True)
@click.option("--condition", default="inoc", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--steps", default=12, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def main(config_path: str, run_dir: str, condition: str, seed: int, steps: int, out: str) -> None:
    cfg = apply_overrides(load_config(config_path), {"finetune.train_autocast": "bfloat16"})
    study = open_study(cfg, Path(run_dir), " ".join(sys.argv), provenance="bf16_nan_check")
    if study.tlm.device.type != "cuda":
        raise click.ClickException("the cuDNN attention question needs a CUDA device")
    plan = build_plan(study, "main")
    run = next((r for r in plan.runs if r.condition == condition and r.seed == seed), None)
    if run is None:
        raise click.ClickException(f"no run {condition} seed {seed} in the main plan: {[r.name for r in plan.runs]}")
    result: dict[str, Any] = {"condition": condition, "seed": seed, "torch": torch.__version__,
                              "cudnn": torch.backends.cudnn.version(), "device": torch.cuda.get_device_name(),
                              "variants": {}}
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        for label, flag in (("cudnn_sdp_on", True), ("cudnn_sdp_off", False)):
            torch.backends.cuda.enable_cudnn_sdp(flag)
            steps_out = train_steps(study, run, plan.sft, steps)
            bad = [s for s in steps_out if not s["finite"]]
            result["variants"][label] = {"steps": steps_out, "first_non_finite_step": bad[0]["step"] if bad else None}
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    click.echo({k: v["first_non_finite_step"] for k, v in result["variants"].items()})


if __name__ == "__main__":
    main()
