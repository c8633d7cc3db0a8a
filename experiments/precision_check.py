"""Does a cheaper precision give the same gradient cosines as fp32?

Measures cos(-g, v) for the first N SFT examples under two conditions in fp32 and in
bf16 autocast (fp32 weights), through the same gradient loop as `align` (``gradient_cosines``), and reports
|delta cos| per layer and position. Usage (after `extract` in RUN_DIR):

    python experiments/precision_check.py --run-dir RUN_DIR [--n 64] [--config FILE]
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from nnsight_inoc import RunLayout, apply_overrides, gradient_cosines, open_study, run_config, write_json


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False), required=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--n", default=64, show_default=True)
def main(run_dir: str, config_path: str | None, n: int) -> None:
    base = run_config(run_dir, config_path)  # the folder's config.toml, the file's keys on top
    results = {}
    cos = {}
    for label, over in (("fp32", {"model.autocast": "none"}), ("bf16_autocast", {"model.autocast": "bfloat16"})):
        # model.autocast is this experiment's variant: measured, never written into the folder's config.toml
        study = open_study(apply_overrides(base, over), Path(run_dir), f"precision_check {label}",
                           variant=("model.autocast",))
        t0 = time.time()
        try:
            cos[label] = {c: gradient_cosines(study, study.cfg.align.conditions[c], n=n).cos for c in ("neutral", "inoc")}
        except FloatingPointError as err:  # NonFiniteError: a NaN/inf loss or gradient under this precision
            results[label] = {"error": str(err)}
            continue
        results[label] = {"seconds": time.time() - t0}
        del study
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if "fp32" in cos and "bf16_autocast" in cos:
        for c in ("neutral", "inoc"):
            d = (cos["bf16_autocast"][c] - cos["fp32"][c]).abs()  # (n, L, P)
            results[f"abs_delta_cos_{c}"] = {"max": float(d.max()), "mean": float(d.mean()),
                                             "max_by_layer": d.amax(dim=(0, 2)).tolist()}
            dm = (cos["bf16_autocast"][c].mean(0) - cos["fp32"][c].mean(0)).abs()
            results[f"abs_delta_mean_cos_{c}"] = float(dm.max())
    write_json(RunLayout(Path(run_dir)).precision_check, {"n": n, **results})
    click.echo(results)


if __name__ == "__main__":
    main()
