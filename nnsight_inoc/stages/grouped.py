"""The grouped executor of the finetune plan: the runs of one seed trained K at a time in one pass of the base.

The runs of one seed share their examples, step order and LoRA initialisation; only the
training-time system prompt differs. So a step of K runs is one forward/backward pass of the
shared frozen base over K row blocks (block k: the step's examples under run k's prompt),
with K stacked adapters (:mod:`nnsight_inoc.train.grouped`), each with its own loss mean and
AdamW state, exactly as if trained alone up to the reduction order (tested against the
sequential executor on a tiny model). Nothing is deep-copied: the adapters hook the study's
own base model and are removed after every step. The probes of a group are one gradient
trace per batch (:func:`~nnsight_inoc.probes.gradients.gradient_metrics` over K row blocks),
and each run's adapter is saved in PEFT's format, which the other executors and plain PEFT
load. Steering runs (a different vector per run) are trained one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.core.progress import log
from nnsight_inoc.models.checkpointing import activation_checkpointing
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.stages.drift import drift_group
from nnsight_inoc.stages.finetune import (
    check_inputs,
    check_run,
    content_loss_pre,
    free_memory,
    needs_training,
    precision,
    rows_of,
    train_record,
    train_run,
)
from nnsight_inoc.stages.intervene import intervention_setup
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec, build_plan
from nnsight_inoc.study import SFTSet, Study
from nnsight_inoc.trace.chat import Batch, encode_chats, per_row
from nnsight_inoc.trace.edit import GradEdit, stack_edits
from nnsight_inoc.train import grouped as G
from nnsight_inoc.train.grouped_io import save_peft
from nnsight_inoc.train.lora import seeded
from nnsight_inoc.train.order import probe_steps, step_order

MEMORY_SHARE = 0.85  # of the device's memory a group may plan to use (allocator fragmentation, drift's KV cache)


def step_batch(study: Study, sft: SFTSet, runs: Sequence[RunSpec], idx: list[int]) -> Batch:
    """K row blocks of one step's examples, block k under run k's system prompt (each example's own for a leak)."""
    users = [sft.prompts[i] for i in idx]
    comps = [sft.completions[i] for i in idx]
    systems = [per_row(rows_of(r.prompting.systems(sft.untraited), idx), len(idx)) for r in runs]
    return encode_chats(study.loaded.tokenizer, [s for rows in systems for s in rows], users * len(runs),
                        comps * len(runs), n_assistant=study.cfg.align.n_assistant_tokens)


def probe_group(study: Study, grouped: G.GroupedLora, runs: Sequence[RunSpec], sft: SFTSet, v: torch.Tensor,
                step: int, edit: GradEdit | None = None) -> list[dict[str, Any]]:
    """Every run's probe (mean cos(-g, v) (L, P) and loss on the first n_probe SFT examples) from one trace per batch.

    Batch c holds K row blocks of the same ``align.batch_size`` examples (block k under run
    k's prompt); each run's means are summed batch by batch in float64, as the one-run probe
    sums them. The base stays in eval mode; the probe's gradients on the adapters are cleared. ``edit``
    (one block per run) applies the runs' gradient interventions, each to its own rows, as in training.
    ``execution.activation_checkpointing`` applies to the probe's gradient traces as to the training steps
    (a probe batch holds as many rows per run as a step, so it would otherwise set the group's peak).
    """
    n, bs, K = study.cfg.finetune.n_probe, study.cfg.align.batch_size, len(runs)
    order: list[tuple[int, int]] = []  # (run, example) of each row, chunk-major then run-major
    for s in range(0, n, bs):
        order += [(k, i) for k in range(K) for i in range(s, min(s + bs, n))]
    base = study.loaded.hf_model
    base.eval()
    try:
        with grouped.attached(base, None), activation_checkpointing(base, study.cfg.execution.activation_checkpointing):
            systems = [per_row(r.prompting.systems(sft.untraited), len(sft.prompts)) for r in runs]
            m = gradient_metrics(study.tlm, study.loaded.tokenizer, [systems[k][i] for k, i in order],
                                 [sft.prompts[i] for _, i in order], [sft.completions[i] for _, i in order], v,
                                 n_assistant=study.cfg.align.n_assistant_tokens, batch_size=K * bs,
                                 ids=[f"{runs[k].name}:{sft.ids[i]}" for k, i in order], edit=edit,
                                 label=f"grouped probe at step {step}")
    finally:
        for p in grouped.parameters():
            p.grad = None
    out = []
    for k in range(K):
        rows = [j for j, (kk, _) in enumerate(order) if kk == k]  # run k's rows, batch by batch in order
        cos = m.cos[rows].double()
        loss = m.loss[rows].double()
        cos_sum = sum(cos[s : s + bs].sum(0) for s in range(0, n, bs))
        loss_sum = sum(float(loss[s : s + bs].sum()) for s in range(0, n, bs))
        out.append({"step": step, "cos": (cos_sum / n).float(), "loss": loss_sum / n})
    return out


def train_group(study: Study, plan: FinetunePlan, runs: Sequence[RunSpec], dest: RunLayout | None = None
                ) -> list[dict[str, Any]]:
    """Train K runs of one seed together; writes each run's PEFT adapter and ``train.json``. Returns the records.

    ValueError for runs of different seeds, steering runs, or a plan without the SFT set.
    """
    study.require_local("LoRA training")
    prec = precision(study)
    device = study.tlm.device
    prec.check(device)
    if plan.sft is None:
        raise ValueError("this finetune plan was built without the SFT set (for drift only); it cannot train")
    if len({r.seed for r in runs}) != 1 or any(r.steer is not None for r in runs) or not runs:
        raise ValueError("a group holds unsteered runs of one seed; got "
                         f"{[(r.name, r.steer is not None) for r in runs]}")
    t0 = time.time()
    cfg, sft, v, seed, K = study.cfg.finetune, plan.sft, plan.v, runs[0].seed, len(runs)
    ckpt = study.cfg.execution.activation_checkpointing
    check_inputs(study, sft, v)
    order = step_order(len(sft.prompts), seed, cfg.steps, cfg.batch_size)
    at = set(probe_steps(cfg.steps, cfg.probe_every))
    base = study.loaded.hf_model
    content0 = [content_loss_pre(study, plan, run) for run in runs]
    setups = [intervention_setup(study, run.intervene, sft, v, plan.sft_systems(run), plan.layer) for run in runs]
    edit = stack_edits([e for e, _ in setups], study.tlm.d_model)
    edit = edit.to(device) if edit is not None else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with seeded(seed, device):  # the same init as each run's own get_peft_model under its seed
        grouped = G.fresh(base, K, cfg.rank, cfg.alpha, cfg.target_modules, cfg.dropout)
    opt = torch.optim.AdamW(grouped.parameters(), lr=cfg.lr)
    losses: list[list[float]] = [[] for _ in runs]
    probes: list[list[dict[str, Any]]] = [[] for _ in runs]
    t_probe, t_steps0 = 0.0, time.time()
    names = ", ".join(r.condition for r in runs)
    for step in range(cfg.steps + 1):
        if step in at:
            tp = time.time()
            for k, p in enumerate(probe_group(study, grouped, runs, sft, v, step, edit)):
                probes[k].append(p)
            t_probe += time.time() - tp
            log(f"finetune group seed {seed} ({names}) step {step}: probe loss "
                + " ".join(f"{p[-1]['loss']:.4f}" for p in probes))
        if step == cfg.steps:
            break
        for k, loss in enumerate(G.train_step(grouped, base, opt, step_batch(study, sft, runs, order[step]), step,
                                              prec, edit=edit, tlm=study.tlm, checkpointing=ckpt)):
            losses[k].append(loss)
    t_loop = time.time() - t_steps0
    base.eval()
    wall = time.time() - t0
    group = {"kind": "grouped", "k": K, "runs": [r.name for r in runs], "group_wall_s": wall,
             "activation_checkpointing": ckpt,
             "note": "wall_s is the group's wall time divided by k; timing_s is the group's"}
    records = []
    layout = dest or study.layout
    for k, run in enumerate(runs):
        files = layout.run(run.condition, run.seed)
        save_peft(grouped, k, files.adapter, study.loaded.location)
        probes[k][0]["content_loss"] = content0[k]
        rec = train_record(study, run, sft, order, losses[k], probes[k], None, device, intervention=setups[k][1],
                           wall_s=wall / K,
                           timing_s={"train_steps": t_loop - t_probe, "probes": t_probe,
                                     "setup_and_save": time.time() - t0 - t_loop}, executor=group)
        A.write_json(files.train_json, rec)  # last: its presence marks a trained run
        records.append(rec)
    del grouped, opt
    return records


def group_size(study: Study, plan: FinetunePlan, runs: Sequence[RunSpec]) -> int:
    """Runs per group: ``execution.group_size``, else as many as fit (CUDA: measured; CPU: all given runs)."""
    n = len(runs)
    if study.cfg.execution.group_size:
        return min(study.cfg.execution.group_size, n)
    device = study.tlm.device
    if device.type != "cuda" or n <= 1:
        return n
    per_run, base = _measure_step_memory(study, plan, runs)
    total = torch.cuda.get_device_properties(device).total_memory
    k = int((MEMORY_SHARE * total - base) // per_run) if per_run > 0 else n
    k = max(1, min(n, k))
    log(f"grouped executor: {per_run / 1e9:.2f} GB per run over a {base / 1e9:.2f} GB base step; "
        f"{k} runs per group on {total / 1e9:.0f} GB")
    return k


def _measure_step_memory(study: Study, plan: FinetunePlan, runs: Sequence[RunSpec]) -> tuple[float, float]:
    """Peak bytes of 1 and of 2 runs (throwaway adapters): (per-run increment, 1-run peak), CUDA only.

    Each peak is the larger of one training step and one training probe's gradient trace (K row blocks,
    :func:`~nnsight_inoc.probes.gradients.gradient_metrics`), both on the plan's longest batch with
    ``max(finetune.batch_size, align.batch_size)`` rows per run and under the configured
    ``execution.activation_checkpointing``, so a group sized from it fits every step and probe.
    """
    assert plan.sft is not None
    sft, cfg, device, base = plan.sft, study.cfg.finetune, study.tlm.device, study.loaded.hf_model
    ckpt = study.cfg.execution.activation_checkpointing
    rows = max(cfg.batch_size, study.cfg.align.batch_size)
    order = step_order(len(sft.prompts), runs[0].seed, cfg.steps, rows)
    longest = max(order, key=lambda idx: max(len(sft.prompts[i]) + len(sft.completions[i]) for i in idx))
    runs = [max(runs, key=lambda r: (r.leak_words, len(r.system_prompt)))]  # the longest prompt pads the most
    peaks = []
    for k in (1, 2):
        with torch.random.fork_rng(devices=[device]):
            g = G.fresh(base, k, cfg.rank, cfg.alpha, cfg.target_modules, cfg.dropout)
        opt = torch.optim.AdamW(g.parameters(), lr=cfg.lr)
        free_memory()
        torch.cuda.reset_peak_memory_stats(device)
        G.train_step(g, base, opt, step_batch(study, sft, runs * k, longest).to(device), 0, precision(study),
                     checkpointing=ckpt)
        step_peak = torch.cuda.max_memory_allocated(device)
        free_memory()
        torch.cuda.reset_peak_memory_stats(device)
        _probe_trial(study, g, runs * k, sft, plan.v, longest)
        peaks.append(max(step_peak, torch.cuda.max_memory_allocated(device)))
        del g, opt
    base.eval()
    free_memory()
    return float(peaks[1] - peaks[0]), float(peaks[0])


def _probe_trial(study: Study, grouped: G.GroupedLora, runs: Sequence[RunSpec], sft: SFTSet, v: torch.Tensor,
                 idx: list[int]) -> None:
    """One training probe's gradient trace over the examples ``idx`` in K row blocks, as :func:`probe_group`
    runs it (eval mode, the configured checkpointing); for its memory only."""
    base, bs, ckpt = study.loaded.hf_model, len(idx), study.cfg.execution.activation_checkpointing
    base.eval()
    try:
        with grouped.attached(base, None), activation_checkpointing(base, ckpt):
            systems = [per_row(r.prompting.systems(sft.untraited), len(sft.prompts)) for r in runs]
            gradient_metrics(study.tlm, study.loaded.tokenizer, [s[i] for s in systems for i in idx],
                             [sft.prompts[i] for _ in runs for i in idx],
                             [sft.completions[i] for _ in runs for i in idx], v,
                             n_assistant=study.cfg.align.n_assistant_tokens, batch_size=len(runs) * bs,
                             label="group-size trial probe")
    finally:
        for p in grouped.parameters():
            p.grad = None


def run_grouped(study: Study, which: str = "all", *, with_drift: bool = False,
                conditions: Collection[str] | None = None, exclude: Collection[str] = ()) -> list[dict[str, Any]]:
    """The grouped executor: every run of the plan not yet trained, K runs of a seed at a time; returns the records.

    Runs already trained are reused after the same check as the other executors
    (:func:`~nnsight_inoc.stages.finetune.check_trained`). With ``with_drift`` each group's drift
    is measured right after it trains, K runs per merged decode. ``conditions`` / ``exclude``
    restrict the plan (two processes sharing one sweep on two GPUs take disjoint conditions).
    """
    t0 = time.time()
    plan = build_plan(study, which).restricted(conditions, exclude)
    done: list[dict[str, Any]] = []
    for runs in plan.by_seed().values():
        done += execute_seed_runs(study, plan, runs, with_drift=with_drift)
    study.prov.stage(f"finetune_{which}", time.time() - t0, runs=len(done), executor="grouped")
    return done


def execute_seed_runs(study: Study, plan: FinetunePlan, runs: Sequence[RunSpec], *,
                      with_drift: bool) -> list[dict[str, Any]]:
    """Bring runs of one seed to "trained" (and "drift measured" with ``with_drift``), K at a time; their records.

    Trained runs are reused after the config check; steered runs (one vector each) train alone; the
    rest train in groups of :func:`group_size`, each group's drift measured in one merged decode
    right after it trains. Also the unit of work of a Ray task per seed (:mod:`.ray_exec`).
    ValueError when the runs are of several seeds (they share one data order and LoRA init).
    """
    if len({r.seed for r in runs}) > 1:
        raise ValueError(f"grouped runs must share a seed, got {sorted({r.seed for r in runs})}")
    done: list[dict[str, Any]] = []
    todo = []
    for run in runs:
        files = study.layout.run(run.condition, run.seed)
        if not needs_training(files):
            done.append(check_run(study, files, run))
            continue
        todo.append(run)
    for run in [r for r in todo if r.steer is not None]:  # one vector per run: trained alone
        done.append(train_run(study, plan, run))
        free_memory()
    plain = [r for r in todo if r.steer is None]
    if plain:
        seed = plain[0].seed
        k = group_size(study, plan, plain)
        for s in range(0, len(plain), k):
            group = plain[s : s + k]
            log(f"grouped executor: seed {seed}, runs {[r.name for r in group]}")
            done += train_group(study, plan, group)
            free_memory()
            if with_drift:
                drift_group(study, plan, group)
    if with_drift:
        for run in runs:  # steered and already-trained runs (measured ones are read back)
            drift_group(study, plan, [run])
    return done
