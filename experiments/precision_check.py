"""Does a cheaper precision give the same gradient cosines as fp32?

Measures cos(-g, v) for the first N SFT examples under two conditions in fp32 and in
bf16 autocast (fp32 weights), through the same trace code as `align`, and reports
|delta cos| per layer and position. Usage (after `extract` in RUN_DIR):

    python experiments/precision_check.py --run-dir RUN_DIR [--n 64] [--config FILE]
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from nnsight_inoc import artifacts as A
from nnsight_inoc.alignment import gradient_index, metrics, with_sum
from nnsight_inoc.chat import encode_chats
from nnsight_inoc.config import apply_overrides, load_config
from nnsight_inoc.directions import POSITIONS
from nnsight_inoc.extract import load_direction
from nnsight_inoc.study import ensure_sft, open_study
from nnsight_inoc.tracing import NonFiniteError, capture_gradients


def cosines(study, sft, system: str, v: torch.Tensor, n: int) -> torch.Tensor:
    out = []
    bs = study.cfg.align.batch_size
    for s in range(0, n, bs):
        batch = encode_chats(study.loaded.tokenizer, system, sft.prompts[s:min(s + bs, n)],
                             sft.completions[s:min(s + bs, n)], n_assistant=study.cfg.align.n_assistant_tokens)
        res = capture_gradients(study.tlm, batch, gradient_index(batch))
        out.append(metrics(with_sum(res.grads), v).cos)
    return torch.cat(out)


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False), required=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--n", default=64, show_default=True)
def main(run_dir: str, config_path: str | None, n: int) -> None:
    base = load_config(config_path)
    results = {}
    cos = {}
    for label, over in (("fp32", {"model.autocast": "none"}), ("bf16_autocast", {"model.autocast": "bfloat16"})):
        study = open_study(apply_overrides(base, over), Path(run_dir), f"precision_check {label}")
        v_all, _ = load_direction(study)
        v = v_all[:, POSITIONS.index(study.cfg.align.direction_position)]
        sft = ensure_sft(study)
        t0 = time.time()
        try:
            cos[label] = {c: cosines(study, sft, study.cfg.align.conditions[c], v, n) for c in ("neutral", "inoc")}
        except NonFiniteError as err:
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
    A.write_json(Path(run_dir) / "precision_check.json", {"n": n, **results})
    click.echo(results)


if __name__ == "__main__":
    main()
