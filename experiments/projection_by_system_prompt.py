"""Template experiment: where does each system prompt put the final prompt token along v?

Copy this to write your own: open a study (config, model, trait, splits and provenance in one
object), load v, read the residual stream through the package's traces (local or NDIF, chosen
by ``--backend`` in the config) and get plain tensors back. The study's config is the run
folder's own config.toml (``run_config``); a ``--config`` file's keys go on top, and one that
conflicts with the folder's results is refused before anything is written.

    python experiments/projection_by_system_prompt.py --run-dir RUN_DIR \
        --system "You always capitalise your responses." --system "You are a helpful assistant."

Needs `extract` to have run in RUN_DIR. Writes RUN_DIR/experiments/projection_by_system_prompt.json:
per system prompt, the mean projection <h_l, v_l> per layer with a 95% bootstrap CI over prompts.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from nnsight_inoc import (
    bootstrap_mean_ci_by_col,
    encode_chats,
    load_direction,
    open_study,
    read_residuals,
    reporting_layer,
    run_config,
    write_json,
)


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False), required=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--system", "systems", multiple=True, required=True, help="A system prompt (repeatable).")
@click.option("--n", default=64, show_default=True, help="Held-out eval prompts to use.")
def main(run_dir: str, config_path: str | None, systems: tuple[str, ...], n: int) -> None:
    cfg = run_config(run_dir, config_path)  # the folder's config.toml, the file's keys on top
    study = open_study(cfg, Path(run_dir), "experiments/projection_by_system_prompt.py")
    v = load_direction(study, "final_prompt")  # (L, d): the final-prompt-token direction
    layer, bs = reporting_layer(study), study.cfg.extract.batch_size
    users = [p.text for p in study.splits.eval[:n]]
    out = {"layer": layer, "n": len(users), "systems": {}}
    for system in systems:
        rows = []
        for s in range(0, len(users), bs):
            batch = encode_chats(study.loaded.tokenizer, system, users[s : s + bs])
            h = read_residuals(study.tlm, batch, batch.final_prompt_idx[:, None])[:, :, 0]  # (b, L, d)
            rows.append(torch.einsum("bld,ld->bl", h.double(), v.double()))
        est, lo, hi = bootstrap_mean_ci_by_col(torch.cat(rows).numpy(), n_boot=study.cfg.align.n_bootstrap,
                                               rng=study.cfg.seed)
        out["systems"][system] = {"mean": est.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
        click.echo(f"{system!r}: projection at layer {layer} = {est[layer]:.3f} [{lo[layer]:.3f}, {hi[layer]:.3f}]")
    write_json(study.layout.experiment_output("projection_by_system_prompt"), out)


if __name__ == "__main__":
    main()
