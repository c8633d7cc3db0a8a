"""Do batched drift answers equal one-run-at-a-time answers? Count greedy flips and show whether they are ties.

Issue 17, item 3: the drift stage decodes the answers of K trained runs in one batch, each run's
adapter on its own row block (``stages.drift.drift_group``). Greedy answers must be identical to
the one-run-at-a-time path (the same stage with K = 1), or the flips are counted and shown to be
ties. On a GPU the two batch shapes may pick different matmul kernels, so logits can differ in
the last bits, and greedy decoding flips where two tokens are that close.

For each group of K runs this decodes the neutral-prompt drift answers twice, alone and grouped,
with the drift stage's own settings (prompts, ``extract.max_new_tokens``, batch size). Answers are
compared token by token up to and including the first stop id. At each flip (the first step where
the two differ) the common prefix is run again through both arrangements (one row with only this
run's adapter; K rows, block k this run's) and the tool records

- ``margin``: the alone arrangement's logit of its own token minus that of the grouped path's token;
- ``arrangement_diff``: the largest |logit difference| over the vocabulary between the arrangements;
- ``tie``: ``|margin| <= arrangement_diff``: the two tokens are closer than the arithmetic difference
  between the two arrangements, so either choice is the same computation up to rounding.

It also scores both sets of answers as drift does and reports each run's difference in mean trait
score. Writes one JSON file (with the command, device, versions and commit); exit 0 either way.

    PYTHONPATH=. python perf/greedy_flips.py --run-dir RUN_DIR --which main --k 4 --out greedy_flips.json

Needs trained runs with adapters in RUN_DIR (``finetune``); runs on whatever device the config names.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import torch

from nnsight_inoc.core.artifacts import git_info
from nnsight_inoc.core.config import load_config
from nnsight_inoc.data.traits import score_texts
from nnsight_inoc.models.stops import decode_answer
from nnsight_inoc.stages.plan import build_plan
from nnsight_inoc.study import Study, open_study
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.generation import greedy_new_ids_by_system, model_stops
from nnsight_inoc.train.grouped_io import load_peft


def through_first_stop(ids: Sequence[int], stops: Sequence[int]) -> list[int]:
    """``ids`` up to and including the first stop id (so that stopping early is a difference too); all of them
    when none occurs. Padding after the stop is dropped."""
    stop_set = {int(s) for s in stops}
    for pos, t in enumerate(ids):
        if int(t) in stop_set:
            return [int(x) for x in ids[: pos + 1]]
    return [int(x) for x in ids]


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """First index where two id lists differ (a list ending first differs at its length); None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def classify_flip(alone: torch.Tensor, grouped: torch.Tensor, token_alone: int, token_grouped: int) -> dict[str, Any]:
    """The tie test at one flip, from the next-token logits (V,) of both arrangements for the common prefix.

    ``margin`` = alone[token_alone] - alone[token_grouped]; ``arrangement_diff`` = max |alone - grouped|;
    ``tie`` when |margin| <= arrangement_diff.
    """
    alone, grouped = alone.double(), grouped.double()
    margin = float(alone[token_alone] - alone[token_grouped])
    diff = float((alone - grouped).abs().max())
    return {"token_alone": token_alone, "token_grouped": token_grouped, "margin": margin,
            "margin_grouped": float(grouped[token_grouped] - grouped[token_alone]),
            "arrangement_diff": diff, "logit_std": float(alone.std()), "tie": abs(margin) <= diff}


def next_logits(study: Study, adapters: Sequence[Path], k: int, system: str, user: str,
                prefix: Sequence[int]) -> torch.Tensor:
    """(V,) next-token logits of run k after ``prefix`` with ``adapters`` attached: one row block per adapter, every
    block the same chat (so block k sees exactly run k's update), fp32 on the CPU."""
    tok, base = study.loaded.tokenizer, study.loaded.hf_model
    batch = encode_chats(tok, [system] * len(adapters), [user] * len(adapters), padding_side="left")
    tail = torch.tensor([list(prefix)] * len(adapters), dtype=batch.input_ids.dtype)
    ids = torch.cat([batch.input_ids, tail], dim=1)
    mask = torch.cat([batch.attention_mask, torch.ones_like(tail)], dim=1)
    device = next(base.parameters()).device
    grouped = load_peft(list(adapters), base)
    with torch.no_grad(), grouped.attached(base, 1):
        logits = base(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return logits[k, -1].float().cpu()


def compare_group(study: Study, names: Sequence[str], adapters: Sequence[Path], system: str,
                  users: Sequence[str]) -> dict[str, Any]:
    """Alone vs grouped greedy answers of one group of runs; see the module docstring."""
    cfg, tok, base = study.cfg, study.loaded.tokenizer, study.loaded.hf_model
    stops = model_stops(study.tlm, tok)
    tokens, batch = cfg.extract.max_new_tokens, cfg.data.generation_batch_size
    base.eval()

    def decode(adapter_dirs: Sequence[Path]) -> list[list[list[int]]]:
        lora = load_peft(list(adapter_dirs), base)
        with lora.attached(base, None):
            return greedy_new_ids_by_system(study.tlm, tok, [system] * len(adapter_dirs), users, tokens, batch)

    grouped = decode(adapters)
    alone = [decode([a])[0] for a in adapters]
    runs, flips = [], []
    for k, name in enumerate(names):
        n_same = 0
        for i, user in enumerate(users):
            a, g = through_first_stop(alone[k][i], stops), through_first_stop(grouped[k][i], stops)
            t = first_difference(a, g)
            if t is None:
                n_same += 1
                continue
            if t >= min(len(a), len(g)):  # one ran out of tokens without a stop: the other kept going
                flips.append({"run": name, "prompt": i, "step": t, "tie": False, "note": "one answer is a prefix"})
                continue
            prefix = a[:t]
            rec = classify_flip(next_logits(study, [adapters[k]], 0, system, user, prefix),
                                next_logits(study, adapters, k, system, user, prefix), a[t], g[t])
            flips.append({"run": name, "prompt": i, "step": t, **rec})
        ans_alone = [decode_answer(tok, ids, stops) for ids in alone[k]]
        ans_grouped = [decode_answer(tok, ids, stops) for ids in grouped[k]]
        s_alone, s_grouped = score_texts(study.trait, ans_alone), score_texts(study.trait, ans_grouped)
        diff = abs(s_alone.mean - s_grouped.mean)  # NaN when no answer could be scored: reported as null
        runs.append({"run": name, "identical": n_same, "answers": len(users), "mean_score_alone": s_alone.mean,
                     "mean_score_grouped": s_grouped.mean, "mean_score_diff": None if math.isnan(diff) else diff})
    return {"runs": runs, "flips": flips}


def summarise(groups: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts over every group: answers, identical ones, flips, ties, and the largest mean-score difference
    (over runs with scorable answers, None when there are none; the runs without are listed by name)."""
    runs = [r for g in groups for r in g["runs"]]
    flips = [f for g in groups for f in g["flips"]]
    n = sum(r["answers"] for r in runs)
    same = sum(r["identical"] for r in runs)
    ties = sum(bool(f["tie"]) for f in flips)
    return {"answers": n, "identical": same, "flips": len(flips), "ties": ties,
            "identical_or_ties": same + ties == n,
            "runs_without_scorable_answers": [r["run"] for r in runs if r["mean_score_diff"] is None],
            "max_mean_score_diff": max((r["mean_score_diff"] for r in runs if r["mean_score_diff"] is not None),
                                       default=None)}


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False, exists=True), required=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Default: the run folder's config.toml.")
@click.option("--which", default="main", show_default=True, help="The finetune plan whose trained runs are compared.")
@click.option("--k", default=4, show_default=True, help="Runs per batched decode (the drift stage's group size).")
@click.option("--max-runs", default=0, show_default=True, help="Compare at most this many runs (0 = all trained).")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def main(run_dir: str, config_path: str | None, which: str, k: int, max_runs: int, out: str) -> None:
    if k < 2:
        raise click.BadParameter("--k must be at least 2: grouped decoding needs two or more runs", param_hint="--k")
    cfg = load_config(config_path) if config_path else None
    study = open_study(cfg, Path(run_dir), " ".join(sys.argv), provenance="greedy_flips")
    plan = build_plan(study, which, for_training=False)
    runs = [r for r in plan.runs if study.layout.run(r.condition, r.seed).adapter.is_dir()]
    if max_runs:
        runs = runs[:max_runs]
    if len(runs) < 2:
        raise click.ClickException(f"{len(runs)} trained run(s) with an adapter in {run_dir} for --which {which}; "
                                   "need at least 2 (run `finetune` first)")
    groups = []
    for start in range(0, len(runs), k):
        chunk = runs[start : start + k]
        if len(chunk) < 2:
            chunk = runs[-2:]  # a last group of one would compare a run with itself
        groups.append(compare_group(study, [r.name for r in chunk],
                                    [study.layout.run(r.condition, r.seed).adapter for r in chunk],
                                    plan.neutral_prompt, plan.drift_prompts))
    device = study.tlm.device
    result = {"command": " ".join(sys.argv), "git": git_info(), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
              "model": study.cfg.model.name, "k": k, "n_prompts": len(plan.drift_prompts),
              "max_new_tokens": study.cfg.extract.max_new_tokens, "summary": summarise(groups), "groups": groups}
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
