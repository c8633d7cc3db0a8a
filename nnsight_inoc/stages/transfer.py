"""Stage `transfer`: cross-context transfer of every training prompt, before training (issue 16, item 8).

For every training condition of the finetune plan (content-leak conditions with their per-example
prompts; steering conditions and gradient-intervention arms are left out: the first have no prompt of
their own, and the second change the training gradient inside the backward pass, which this
unedited measurement would not show) and every LoRA seed
(PEFT's init for that seed, the one its runs start from), the LoRA gradient of the training loss
under the condition's prompt is compared with the LoRA gradient of the trait's log-odds under the
neutral test prompt and under each drift panel prompt (:mod:`nnsight_inoc.probes.transfer`).
Held-out prompts are the first ``transfer.n_prompts`` of the eval split, answered greedily under
the neutral prompt (untraited y); T(y) is the trait's SFT construction applied to them (the
transform, or the answer under ``trait.sft_system``). Pairs where T(y) does not score as the trait
or y does are dropped and counted. Written to ``transfer/transfer.json``; whether transfer ranks
the training prompts by drift better than alignment is the drift summary's question.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.progress import log, task
from nnsight_inoc.probes.transfer import SlotGradients, accumulate_loss_gradients, slot_gradients, transfer_scores
from nnsight_inoc.stages.finetune import free_memory, rows_of
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec, build_plan
from nnsight_inoc.study import Study, answers
from nnsight_inoc.train import grouped as G
from nnsight_inoc.train.lora import seeded

SIGN_NOTE = ("inner = <-grad L_P, grad J_Q> over the LoRA weights at PEFT's init for the seed (B = 0, so only B "
             "moves first): > 0 means a plain gradient step under training prompt P raises the trait log-odds J_Q "
             "under test prompt Q (first order; AdamW rescales coordinates). J_Q = mean over held-out prompts of "
             "[CE(untraited answer) - CE(traited answer)] under Q, nats per token.")
SCALARS = ("inner", "cos", "inner_residual", "inner_rest", "norm_train", "norm_trait")


def trait_pairs(study: Study) -> dict[str, Any]:
    """Held-out (user, untraited y, traited T(y)) triples for the trait log-odds, with the dropped counts."""
    cfg, trait = study.cfg, study.trait
    users = [p.text for p in study.splits.eval[: cfg.transfer.n_prompts]]
    tokens = cfg.extract.max_new_tokens
    neutral = cfg.align.conditions["neutral"]
    plain = answers(study, neutral, users, tokens, "transfer: untraited answers")
    if trait.sft_system is None:
        traited = [trait.transform(a) for a in plain]
    else:
        traited = answers(study, trait.sft_system, users, tokens, "transfer: traited answers")
    keep: dict[str, list[str]] = {"users": [], "untraited": [], "traited": []}
    dropped = {"empty": 0, "traited_not_trait": 0, "untraited_is_trait": 0, "identical": 0}
    for u, y, ty in zip(users, plain, traited):
        s_t, s_u = trait.score(ty), trait.score(y)
        if not y.strip() or not ty.strip():
            dropped["empty"] += 1
        elif ty == y:
            dropped["identical"] += 1
        elif s_t is None or s_t < 0.5:
            dropped["traited_not_trait"] += 1
        elif s_u is None or s_u >= 0.5:
            dropped["untraited_is_trait"] += 1
        else:
            keep["users"].append(u)
            keep["untraited"].append(y)
            keep["traited"].append(ty)
    if not keep["users"]:
        raise ValueError(f"transfer: no held-out prompt gave a usable (untraited, traited) pair: {dropped}")
    return {**keep, "dropped": dropped}


def _fresh(study: Study, k: int, seed: int) -> G.GroupedLora:
    """k slots, each PEFT's LoRA init for ``seed`` (the init that seed's runs train from)."""
    f = study.cfg.finetune
    base = study.loaded.hf_model
    with seeded(seed, next(base.parameters()).device):
        g = G.fresh(base, k, f.rank, f.alpha, f.target_modules, f.dropout)
    for p in g.parameters():
        p.requires_grad_(True)
    return g


def trait_gradients(study: Study, tests: Sequence[str], pairs: dict[str, Any], seed: int) -> SlotGradients:
    """grad J_Q for every test prompt Q (one slot each): +grad mean CE(y) - grad mean CE(T(y))."""
    cfg = study.cfg.transfer
    g = _fresh(study, len(tests), seed)
    with g.attached(study.loaded.hf_model, None):
        for comps, sign in ((pairs["untraited"], 1.0), (pairs["traited"], -1.0)):
            accumulate_loss_gradients(study.tlm, study.loaded.tokenizer, g, list(tests), pairs["users"], comps,
                                      cfg.batch_size, sign)
    return slot_gradients(g, cfg.residual_modules)


def loss_gradients(study: Study, plan: FinetunePlan, runs: Sequence[RunSpec], seed: int) -> SlotGradients:
    """grad L_P for each run's training prompt (one slot each) on the first ``transfer.n_examples`` SFT examples."""
    cfg = study.cfg.transfer
    sft = plan.sft
    assert sft is not None  # built for training
    n = min(cfg.n_examples, len(sft.prompts))
    systems = [rows_of(plan.sft_systems(r), range(n)) for r in runs]
    g = _fresh(study, len(runs), seed)
    with g.attached(study.loaded.hf_model, None):
        accumulate_loss_gradients(study.tlm, study.loaded.tokenizer, g, systems, sft.prompts[:n],
                                  sft.completions[:n], cfg.batch_size)
    return slot_gradients(g, cfg.residual_modules)


def _mean(records: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in records])) for k in SCALARS}


def run_transfer(study: Study) -> dict[str, Any]:
    """Transfer of every training condition to the neutral test prompt and the drift panel; writes transfer.json.

    Local only (LoRA weights live here). ValueError before any work when the model is remote.
    """
    study.require_local("The transfer measurement (LoRA-parameter gradients)")
    t0 = time.time()
    cfg = study.cfg
    which = "main" if cfg.finetune.which == "steering" else cfg.finetune.which
    plan = build_plan(study, which)
    runs = list({r.condition: r for r in plan.runs if r.steer is None and r.intervene is None}.values())  # one per condition
    neutral = cfg.align.conditions["neutral"]
    tests = [neutral, *cfg.drift.panel]
    pairs = trait_pairs(study)
    base = study.loaded.hf_model
    base.eval()
    per_seed: dict[str, dict[int, dict[str, Any]]] = {r.condition: {} for r in runs}
    with task("transfer: gradients", len(cfg.finetune.seeds) * len(runs)) as adv:
        for seed in cfg.finetune.seeds:
            trait = trait_gradients(study, tests, pairs, seed)
            for s in range(0, len(runs), cfg.transfer.group_size):
                chunk = runs[s : s + cfg.transfer.group_size]
                grads = loss_gradients(study, plan, chunk, seed)
                for k, run in enumerate(chunk):
                    by_test = [transfer_scores(grads.vectors[k], trait.vectors[j], grads.residual)
                               for j in range(len(tests))]
                    per_seed[run.condition][seed] = {"neutral": by_test[0], "panel": dict(zip(tests[1:], by_test[1:]))}
                adv(len(chunk))
                del grads
            del trait
            free_memory()
    conditions: dict[str, Any] = {}
    for run in runs:
        seeds = per_seed[run.condition]
        rec: dict[str, Any] = {"system_prompt": run.system_prompt, "leak": run.prompting.record(),
                               **_mean([seeds[s]["neutral"] for s in seeds])}
        if cfg.drift.panel:
            rec["panel"] = {p: _mean([seeds[s]["panel"][p] for s in seeds]) for p in cfg.drift.panel}
            rec["panel_mean"] = _mean(list(rec["panel"].values()))
        rec["by_seed"] = {str(s): seeds[s] for s in seeds}
        conditions[run.condition] = rec
        log(f"transfer {run.condition}: inner {rec['inner']:+.3e}, cos {rec['cos']:+.4f} under the neutral prompt")
    out = {
        "conditions": conditions,
        "layer": plan.layer,
        "sign_note": SIGN_NOTE,
        "test_prompts": {"neutral": neutral, "panel": list(cfg.drift.panel)},
        "n_examples": min(cfg.transfer.n_examples, len(plan.sft.prompts) if plan.sft else 0),
        "pairs": {"n": len(pairs["users"]), "dropped": pairs["dropped"], "users": pairs["users"],
                  "untraited_head": pairs["untraited"][:5], "traited_head": pairs["traited"][:5]},
        "seeds": list(cfg.finetune.seeds),
        "transfer_config": cfg.transfer.model_dump(),
        "lora": {"rank": cfg.finetune.rank, "alpha": cfg.finetune.alpha, "target_modules": cfg.finetune.target_modules},
        "model": {"name": study.loaded.name, "sha256": study.loaded.sha256, "dtype": study.loaded.dtype},
        "seconds": time.time() - t0,
    }
    A.write_json(study.layout.transfer_json, out)
    study.prov.stage("transfer", out["seconds"], conditions=len(runs), seeds=len(cfg.finetune.seeds))
    return out
