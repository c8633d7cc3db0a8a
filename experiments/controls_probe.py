"""Issue 16 before any training: can the content leak take loss reduction apart from alignment on the real model?

On a run folder whose extract and align are done (directions, SFT set, loss-matched prompt), with a config that
turns issue 16's controls on, this runs the stages that need no LoRA training and measures, on the first N SFT
examples, every training prompt of the sweep (today's conditions and wording variants, plus the content-leak
factorial):

- the content-leak dial search and its trait-free check (``align/leak.json``, the align stage's own code);
- per condition: the SFT loss, the loss of the untraited answers (the content part; trait part = the difference)
  and cos(-g, v) per layer and position through the align stage's gradient loop;
- r(alignment, loss reduction vs neutral) across all conditions at the reporting layer, per position: issue 16's
  acceptance is |r| <= 0.5 (item 3), against r = -0.99 across today's 16 ALL-CAPS prompts;
- cross-context transfer (``transfer/transfer.json``, the transfer stage).

No training and no drift: this says whether the design can decorrelate the predictors, not what drift does.

    python experiments/controls_probe.py --config gpu/allcaps_gpu.toml --run-dir RUN_DIR --n 200 --out OUT.json
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from scipy import stats

from nnsight_inoc import RunLayout, load_config, open_study, write_json
from nnsight_inoc.core.artifacts import versions
from nnsight_inoc.core.runconfig import leaves
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.probes.losses import example_losses
from nnsight_inoc.stages.finetune import rows_of
from nnsight_inoc.stages.leak import select_leak
from nnsight_inoc.stages.plan import build_plan
from nnsight_inoc.stages.transfer import run_transfer
from nnsight_inoc.study import ensure_sft, load_directions


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False), required=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True)
@click.option("--n", default=200, show_default=True, help="SFT examples measured per condition.")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@click.option("--skip-transfer", is_flag=True)
def main(run_dir: str, config_path: str, n: int, out: str, skip_transfer: bool) -> None:
    cfg = load_config(config_path)
    if not cfg.leak.targets:
        raise click.UsageError("the config has no [leak] targets: nothing to probe")
    # issue 16's sections are this experiment's variant over a folder made without them: measured and recorded in
    # provenance, never written into the folder's config.toml (its align results were made without them)
    variant = tuple(k for k in leaves(cfg.model_dump()) if k.startswith(("leak.", "drift.", "transfer.")))
    study = open_study(cfg, Path(run_dir), "experiments/controls_probe.py", variant=variant)
    t0 = time.time()
    sft = ensure_sft(study)
    leak = select_leak(study, sft)
    t_leak = time.time() - t0
    plan = build_plan(study, "main" if cfg.finetune.which == "steering" else cfg.finetune.which)
    runs = list({r.condition: r for r in plan.runs if r.steer is None}.values())
    v_all, meta = load_directions(study)
    v = v_all[:, list(meta["positions"]).index(cfg.align.direction_position)]
    layer = int(meta["layer"])
    n = min(n, len(sft.prompts))
    tok, bs = study.loaded.tokenizer, cfg.align.batch_size
    conds: dict = {}
    for run in runs:
        systems = rows_of(plan.sft_systems(run), range(n))
        m = gradient_metrics(study.tlm, tok, systems, sft.prompts[:n], sft.completions[:n], v,
                             n_assistant=cfg.align.n_assistant_tokens, batch_size=bs, ids=sft.ids[:n],
                             label=f"controls probe {run.condition}")
        content = example_losses(study.tlm, tok, systems, sft.prompts[:n], sft.untraited[:n], bs)
        conds[run.condition] = {
            "system_prompt": run.system_prompt, "leak": run.prompting.record(),
            "loss": m.loss.tolist(), "content_loss": content.tolist(),
            "mean_loss": float(m.loss.mean()), "mean_content_loss": float(content.mean()),
            "mean_cos": m.cos.mean(0).tolist(),  # (L, P)
            "cos_at_layer": m.cos[:, layer].tolist(),  # (n, P)
        }
        print(f"{run.condition}: loss {conds[run.condition]['mean_loss']:.4f}, content "
              f"{conds[run.condition]['mean_content_loss']:.4f}", flush=True)
    positions = m.positions
    neutral = conds["neutral"]
    names = [c for c in conds if c != "neutral"]
    relation = {}
    for j, pos in enumerate(positions):
        d_cos = [conds[c]["mean_cos"][layer][j] - neutral["mean_cos"][layer][j] for c in names]
        red = [neutral["mean_loss"] - conds[c]["mean_loss"] for c in names]
        red_c = [neutral["mean_content_loss"] - conds[c]["mean_content_loss"] for c in names]
        red_t = [a - b for a, b in zip(red, red_c)]
        relation[pos] = {
            "r_alignment_loss_reduction": float(stats.pearsonr(d_cos, red)[0]),
            "r_alignment_trait_part": float(stats.pearsonr(d_cos, red_t)[0]),
            "r_alignment_content_part": float(stats.pearsonr(d_cos, red_c)[0]),
            "spearman_alignment_loss_reduction": float(stats.spearmanr(d_cos, red)[0]),
            "without_leak": float(stats.pearsonr(*zip(*[(d, r) for d, r, c in zip(d_cos, red, names)
                                                        if conds[c]["leak"] is None]))[0]),
        }
    result = {
        "n_examples": n, "layer": layer, "positions": positions, "conditions": conds, "leak": leak,
        "relation": relation, "acceptance": {"rule": "|r(alignment, loss reduction)| <= 0.5 at the reporting layer",
                                            "a_sum": abs(relation["a_sum"]["r_alignment_loss_reduction"]) <= 0.5},
        "seconds": {"leak": t_leak, "conditions": time.time() - t0 - t_leak},
        "config": config_path, "versions": versions(),
    }
    if not skip_transfer:
        t1 = time.time()
        result["transfer"] = run_transfer(study)["conditions"]
        result["seconds"]["transfer"] = time.time() - t1
    write_json(Path(out), result)
    write_json(RunLayout(Path(run_dir)).root / "experiments" / "controls_probe.json", result)
    print({p: round(r["r_alignment_loss_reduction"], 3) for p, r in relation.items()})


if __name__ == "__main__":
    main()
