"""Example traced experiment: where does each system prompt put the final prompt token along v?

A template for your own experiments: open a study (config, model, trait, splits and
provenance in one object), then call the trace functions of ``nnsight_inoc.tracing``
(they run locally or, later, remotely from the same code) and get plain tensors back.

    python experiments/projection_by_system_prompt.py --run-dir RUN_DIR \
        --system "You always capitalise your responses." --system "You are a helpful assistant."

Needs `extract` to have run in RUN_DIR. Writes RUN_DIR/experiments/projection_by_system_prompt.json.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from nnsight_inoc import artifacts as A
from nnsight_inoc.chat import encode_chats
from nnsight_inoc.config import load_config
from nnsight_inoc.extract import load_direction
from nnsight_inoc.stats import bootstrap_mean_ci_by_col
from nnsight_inoc.study import open_study
from nnsight_inoc.tracing import read_residuals


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False), required=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--system", "systems", multiple=True, required=True, help="A system prompt (repeatable).")
@click.option("--n", default=64, show_default=True, help="Held-out eval prompts to use.")
def main(run_dir: str, config_path: str | None, systems: tuple[str, ...], n: int) -> None:
    study = open_study(load_config(config_path), Path(run_dir), "experiments/projection_by_system_prompt.py")
    v, meta = load_direction(study)
    v_final = v[:, 0]  # (L, d): the final-prompt-token direction
    users = [p.text for p in study.splits.eval[:n]]
    out = {"layer": meta["layer"], "n": len(users), "systems": {}}
    for system in systems:
        rows = []
        for s in range(0, len(users), study.cfg.extract.batch_size):
            batch = encode_chats(study.loaded.tokenizer, system, users[s : s + study.cfg.extract.batch_size])
            h = read_residuals(study.tlm, batch, batch.final_prompt_idx[:, None])[:, :, 0]  # (b, L, d)
            rows.append(torch.einsum("bld,ld->bl", h.double(), v_final.double()))
        proj = torch.cat(rows).numpy()
        est, lo, hi = bootstrap_mean_ci_by_col(proj, n_boot=study.cfg.align.n_bootstrap, rng=study.cfg.seed)
        out["systems"][system] = {"mean": est.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
        l = meta["layer"]
        click.echo(f"{system!r}: projection at layer {l} = {est[l]:.3f} [{lo[l]:.3f}, {hi[l]:.3f}]")
    A.write_json(Path(run_dir) / "experiments" / "projection_by_system_prompt.json", out)


if __name__ == "__main__":
    main()
