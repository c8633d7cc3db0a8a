"""Does a cheaper precision give the same gradient cosines as fp32?

Measures cos(-g, v) for the first N SFT examples under the neutral and inoculation prompts in
fp32 and in a cheaper precision, through the same gradient loop as `align` (``gradient_cosines``),
and reports |delta cos| per layer and position. Variants: ``bf16_autocast`` (bf16 autocast over
fp32 weights; writes RUN_DIR/precision_check.json, which the report shows) and ``tf32``
(``align.capture_precision = "tf32"``: the gradient captures' matmuls on TF32 tensor cores, CUDA
only; writes RUN_DIR/experiments/precision_check_tf32.json).

The acceptance rule of issue 17 is computed too: per-example |delta cos| <= 0.01, and every
condition mean within a tenth of the smallest contrast the align summary reports (the
inoc - neutral, inoc - lossmatch, lossmatch - neutral and explicit - neutral differences at the
reporting layer, positions a_sum and final_prompt), when align has run.

    python experiments/precision_check.py --run-dir RUN_DIR [--variant tf32] [--n 64] [--config FILE]
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from nnsight_inoc import RunLayout, apply_overrides, gradient_cosines, open_study, run_config, write_json

VARIANTS = {"bf16_autocast": {"model.autocast": "bfloat16"}, "tf32": {"align.capture_precision": "tf32"}}
MAX_ABS_DELTA_COS = 0.01  # issue 17's per-example limit
CONTRAST_SHARE = 0.1  # condition means within this share of the smallest reported contrast


def smallest_contrast(layout: RunLayout) -> float | None:
    """The smallest |diff_cos| the align summary reports at its layer (a_sum, final_prompt), or None."""
    if not layout.align_summary.is_file():
        return None
    import json

    summary = json.loads(layout.align_summary.read_text())
    layer = int(summary["layer"])
    vals = [abs(block[pos]["diff_cos"][layer]) for block in summary["contrasts"].values()
            for pos in ("a_sum", "final_prompt") if pos in block]
    return min(vals) if vals else None


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False), required=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--variant", type=click.Choice(sorted(VARIANTS)), default="bf16_autocast", show_default=True)
@click.option("--n", default=64, show_default=True)
def main(run_dir: str, config_path: str | None, variant: str, n: int) -> None:
    base = run_config(run_dir, config_path)  # the folder's config.toml, the file's keys on top
    layout = RunLayout(Path(run_dir))
    results: dict = {"variant": variant}
    cos = {}
    for label, over in (("fp32", {"model.autocast": "none", "align.capture_precision": "fp32"}),
                        (variant, VARIANTS[variant])):
        # the precision keys are this experiment's variant: measured, never written into the folder's config.toml
        study = open_study(apply_overrides(base, over), Path(run_dir), f"precision_check {label}",
                           variant=("model.autocast", "align.capture_precision"))
        t0 = time.time()
        try:
            cos[label] = {c: gradient_cosines(study, study.cfg.align.conditions[c], n=n).cos for c in ("neutral", "inoc")}
        except FloatingPointError as err:  # NonFiniteError: a NaN/inf loss or gradient under this precision
            results[label] = {"error": str(err)}
            continue
        results[label] = {"seconds": time.time() - t0}
        del study
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if "fp32" in cos and variant in cos:
        worst_mean = 0.0
        for c in ("neutral", "inoc"):
            d = (cos[variant][c] - cos["fp32"][c]).abs()  # (n, L, P)
            suffix = "" if variant == "bf16_autocast" else f"_{variant}"
            results[f"abs_delta_cos_{c}{suffix}"] = {"max": float(d.max()), "mean": float(d.mean()),
                                                     "max_by_layer": d.amax(dim=(0, 2)).tolist()}
            dm = (cos[variant][c].mean(0) - cos["fp32"][c].mean(0)).abs()
            results[f"abs_delta_mean_cos_{c}{suffix}"] = float(dm.max())
            worst_mean = max(worst_mean, float(dm.max()))
        worst = max(float((cos[variant][c] - cos["fp32"][c]).abs().max()) for c in ("neutral", "inoc"))
        small = smallest_contrast(layout)
        results["acceptance"] = {
            "max_abs_delta_cos": worst, "limit": MAX_ABS_DELTA_COS, "per_example_ok": worst <= MAX_ABS_DELTA_COS,
            "max_abs_delta_mean_cos": worst_mean, "smallest_reported_contrast": small,
            "means_ok": None if small is None else worst_mean <= CONTRAST_SHARE * small,
        }
    out = layout.precision_check if variant == "bf16_autocast" else layout.experiment_output(f"precision_check_{variant}")
    write_json(out, {"n": n, **results})
    click.echo(results)


if __name__ == "__main__":
    main()
