"""Do merged drift answers equal one-run, one-measurement-at-a-time answers? Count greedy flips; are they ties?

Issue 24, item 4: the drift stage decodes every measurement of a group of K trained runs together (neutral prompt,
training prompt, each panel prompt; ``stages.drift.drift_group``): each run's adapter on its own row block, the
(measurement, prompt) pairs of all measurements sorted and cut into ``generate`` calls of at most
``execution.drift_rows_per_call`` rows, each call decoding up to its longest answer length and each row cut to its
own. The reference is the simplest path: each run alone (K = 1), each measurement on its own, in batches of
``data.generation_batch_size`` prompts at the measurement's own length (how the sequential executor's drift decoded
before issue 24). Greedy answers must be identical, or the flips are counted and shown to be ties. On a GPU the two
batch shapes may pick different matmul kernels, so logits can differ in the last bits, and greedy decoding flips
where two tokens are that close.

For each group of K runs this decodes every drift measurement both ways. Answers are compared token by token up to
and including the first stop id. At each flip (the first step where the two differ) the common prefix is run again
through both arrangements (one row with only this run's adapter; K rows, block k this run's) and the tool records

- ``margin``: the alone arrangement's logit of its own token minus that of the merged path's token;
- ``arrangement_diff``: the largest |logit difference| over the vocabulary between the arrangements;
- ``tie``: ``|margin| <= arrangement_diff``: the two tokens are closer than the arithmetic difference
  between the two arrangements, so either choice is the same computation up to rounding.

It also scores both sets of answers as drift does and reports each run's difference in mean trait score per
measurement, and counts answers, flips and ties per measurement. Writes one JSON file (with the command, device,
versions and commit); exit 0 either way.

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
from nnsight_inoc.stages.drift import post_measurements, training_prompt_at_test
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec, build_plan
from nnsight_inoc.study import Study, open_study
from nnsight_inoc.trace.chat import encode_chats, per_row
from nnsight_inoc.trace.generation import greedy_new_ids_by_system, model_stops
from nnsight_inoc.trace.merged import Measurement, greedy_new_ids_merged
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


def classify_flip(alone: torch.Tensor, merged: torch.Tensor, token_alone: int, token_merged: int) -> dict[str, Any]:
    """The tie test at one flip, from the next-token logits (V,) of both arrangements for the common prefix.

    ``margin`` = alone[token_alone] - alone[token_merged]; ``arrangement_diff`` = max |alone - merged|;
    ``tie`` when |margin| <= arrangement_diff.
    """
    alone, merged = alone.double(), merged.double()
    margin = float(alone[token_alone] - alone[token_merged])
    diff = float((alone - merged).abs().max())
    return {"token_alone": token_alone, "token_merged": token_merged, "margin": margin,
            "margin_merged": float(merged[token_merged] - merged[token_alone]),
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


def labels(study: Study) -> list[str]:
    """Names of the drift measurements in :func:`~nnsight_inoc.stages.drift.post_measurements` order."""
    return ["neutral_prompt", "training_prompt"] + [f"panel: {p}" for p in study.cfg.drift.panel]


def decode_merged(study: Study, adapters: Sequence[Path],
                  measurements: Sequence[Measurement]) -> list[list[list[list[int]]]]:
    """ids[m][k][i] as the drift stage decodes them: every measurement of the K runs together, in calls of at most
    ``execution.drift_rows_per_call`` rows."""
    base = study.loaded.hf_model
    lora = load_peft(list(adapters), base)
    with lora.attached(base, None):
        ids, _ = greedy_new_ids_merged(study.tlm, study.loaded.tokenizer, measurements,
                                       study.cfg.execution.drift_rows_per_call)
    return ids


def decode_alone(study: Study, adapter: Path, k: int, measurements: Sequence[Measurement]) -> list[list[list[int]]]:
    """ids[m][i] of run k alone (K = 1), one measurement at a time, ``data.generation_batch_size`` prompts a batch."""
    base = study.loaded.hf_model
    lora = load_peft([adapter], base)
    with lora.attached(base, None):
        return [greedy_new_ids_by_system(study.tlm, study.loaded.tokenizer, [m.systems[k]], m.users, m.max_new_tokens,
                                         study.cfg.data.generation_batch_size)[0] for m in measurements]


def compare_group(study: Study, plan: FinetunePlan, runs: Sequence[RunSpec]) -> dict[str, Any]:
    """Merged vs one-run-one-measurement-at-a-time greedy answers of one group of runs; see the module docstring."""
    tok, base = study.loaded.tokenizer, study.loaded.hf_model
    stops = model_stops(study.tlm, tok)
    base.eval()
    adapters = [study.layout.run(r.condition, r.seed).adapter for r in runs]
    systems = [training_prompt_at_test(study, plan, r) for r in runs]  # the base model's answers: no adapter yet
    measurements = post_measurements(study, plan, systems)
    merged = decode_merged(study, adapters, measurements)
    alone = [decode_alone(study, a, k, measurements) for k, a in enumerate(adapters)]
    records, flips = [], []
    for k, run in enumerate(runs):
        for m, (label, meas) in enumerate(zip(labels(study), measurements)):
            n_same = 0
            row_systems = per_row(meas.systems[k], len(meas.users))
            for i, user in enumerate(meas.users):
                a, g = through_first_stop(alone[k][m][i], stops), through_first_stop(merged[m][k][i], stops)
                t = first_difference(a, g)
                if t is None:
                    n_same += 1
                    continue
                where = {"run": run.name, "measurement": label, "prompt": i, "step": t}
                if t >= min(len(a), len(g)):  # one ran out of tokens without a stop: the other kept going
                    flips.append({**where, "tie": False, "note": "one answer is a prefix"})
                    continue
                prefix, system = a[:t], row_systems[i]
                rec = classify_flip(next_logits(study, [adapters[k]], 0, system, user, prefix),
                                    next_logits(study, adapters, k, system, user, prefix), a[t], g[t])
                flips.append({**where, **rec})
            s_alone = score_texts(study.trait, [decode_answer(tok, ids, stops) for ids in alone[k][m]])
            s_merged = score_texts(study.trait, [decode_answer(tok, ids, stops) for ids in merged[m][k]])
            diff = abs(s_alone.mean - s_merged.mean)  # NaN when no answer could be scored: reported as null
            records.append({"run": run.name, "measurement": label, "identical": n_same, "answers": len(meas.users),
                            "mean_score_alone": s_alone.mean, "mean_score_merged": s_merged.mean,
                            "mean_score_diff": None if math.isnan(diff) else diff})
    return {"runs": [r.name for r in runs], "measurements": records, "flips": flips}


def _counts(records: Sequence[dict[str, Any]], flips: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = sum(r["answers"] for r in records)
    same = sum(r["identical"] for r in records)
    ties = sum(bool(f["tie"]) for f in flips)
    return {"answers": n, "identical": same, "flips": len(flips), "ties": ties, "identical_or_ties": same + ties == n}


def summarise(groups: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts over every group (answers, identical ones, flips, ties), overall and per measurement, and the largest
    mean-score difference (over runs and measurements with scorable answers, None when there are none; those without
    are listed as 'run / measurement')."""
    records = [r for g in groups for r in g["measurements"]]
    flips = [f for g in groups for f in g["flips"]]
    by = {label: _counts([r for r in records if r["measurement"] == label],
                         [f for f in flips if f["measurement"] == label])
          for label in dict.fromkeys(r["measurement"] for r in records)}
    return {**_counts(records, flips), "by_measurement": by,
            "without_scorable_answers": [f"{r['run']} / {r['measurement']}" for r in records
                                         if r["mean_score_diff"] is None],
            "max_mean_score_diff": max((r["mean_score_diff"] for r in records if r["mean_score_diff"] is not None),
                                       default=None)}


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False, exists=True), required=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Default: the run folder's config.toml.")
@click.option("--which", default="main", show_default=True, help="The finetune plan whose trained runs are compared.")
@click.option("--k", default=4, show_default=True, help="Runs per merged decode (the drift stage's group size).")
@click.option("--max-runs", default=0, show_default=True, help="Compare at most this many runs (0 = all trained).")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def main(run_dir: str, config_path: str | None, which: str, k: int, max_runs: int, out: str) -> None:
    if k < 2:
        raise click.BadParameter("--k must be at least 2: merged decoding of a group needs two or more runs",
                                 param_hint="--k")
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
        groups.append(compare_group(study, plan, chunk))
    device = study.tlm.device
    cfg = study.cfg
    result = {"command": " ".join(sys.argv), "git": git_info(), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
              "model": cfg.model.name, "k": k, "n_prompts": len(plan.drift_prompts),
              "max_new_tokens": cfg.extract.max_new_tokens, "panel": cfg.drift.panel,
              "panel_prompts": cfg.drift.panel_prompts, "panel_max_new_tokens": cfg.drift.panel_max_new_tokens,
              "rows_per_call": cfg.execution.drift_rows_per_call,
              "alone_batch_size": cfg.data.generation_batch_size,
              "summary": summarise(groups), "groups": groups}
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
