"""Does the trait scorer separate the promote and suppress prompts on THIS model, at this answer length?

A direction is only checked against behaviour through the scorer (monitoring r, the loss-matched
behaviour check, drift), so a scorer that cannot tell promoted from suppressed answers makes every
later number meaningless. Politeness on qwen2.5-coder-1.5b-instruct gave monitoring r 0.40 with
48-token answers (GPU run 2026-11-27); this script asks whether longer answers fix that, cheaply
(greedy answers to a few held-out prompts, no gradients), before spending GPU time.

    python experiments/scorer_check.py --preset politeness --n 12 --tokens 48 --tokens 128 --device cpu

Prints and writes RUN_DIR/experiments/scorer_check.json: per system prompt and answer length, the
mean score, share above 0.5, unscorable count, and promote-vs-suppress AUROC over answers, plus the
first answers so a reader can judge the scorer by eye.
"""

from __future__ import annotations

import click
import numpy as np
from sklearn.metrics import roc_auc_score

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.runconfig import resolve_config
from nnsight_inoc.data.traits import score_texts
from nnsight_inoc.study import answers, open_study


@click.command()
@click.option("--preset", default=None, help="A shipped config (allcaps, spanish, politeness, smoke).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--run-dir", type=click.Path(file_okay=False), default=None)
@click.option("--device", default=None, help="auto, cpu, cuda.")
@click.option("--n", default=12, show_default=True, help="Held-out direction prompts to answer.")
@click.option("--tokens", "lengths", multiple=True, type=int, default=(48,), show_default=True,
              help="max_new_tokens (repeatable).")
@click.option("--promote", default=None, help="Try this promote prompt instead of the trait's (before changing it).")
def main(preset: str | None, config_path: str | None, run_dir: str | None, device: str | None, n: int,
         lengths: tuple[int, ...], promote: str | None) -> None:
    r = resolve_config(run_dir, preset, config_path, {"model.device": device})  # over the folder's config.toml
    study = open_study(r.cfg, r.run_dir, "experiments/scorer_check.py")
    users = [p.text for p in study.splits.direction_heldout[:n]]
    trait = study.trait
    systems = {"promote": promote or trait.promote, "neutral": trait.neutral, "suppress": trait.suppress}
    out: dict = {"trait": trait.name, "n_prompts": len(users), "systems": systems, "lengths": {}}
    for tokens in lengths:
        res: dict = {}
        scores: dict[str, list[float]] = {}
        for label, system in systems.items():
            ans = answers(study, system, users, tokens, f"{label} ({tokens} tokens)")
            s = score_texts(trait, ans)
            scores[label] = [float(x) for x in s.scores if np.isfinite(x)]
            res[label] = {"mean": float(s.mean), "share_above_half": float(s.share_above_half), "n_unscored": s.n_unscored,
                          "answers_head": ans[:3]}
        pos, neg = scores["promote"], scores["suppress"]
        res["auroc_promote_vs_suppress"] = (float(roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg))
                                            if pos and neg else None)
        out["lengths"][str(tokens)] = res
        click.echo(f"{tokens} tokens: " + ", ".join(f"{k} mean {res[k]['mean']:.3f}" for k in systems)
                   + f"; AUROC promote vs suppress {res['auroc_promote_vs_suppress']}")
        click.echo(f"   spread of promote scores: {np.round(pos, 2).tolist()}")
    path = study.layout.experiment_output("scorer_check" if promote is None else "scorer_check_promote")
    A.write_json(path, out)
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
