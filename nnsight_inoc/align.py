"""Stage: per-example gradient alignment with v(l) under each training condition.

Each condition's measurements are saved on their own (``align/cond_<name>.pt``) so
``align --condition inoc`` and ``--condition all`` compose; :func:`summarise` then
reads whatever conditions exist and applies the controls.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from . import artifacts as A
from .alignment import gradient_index, metrics, position_names, unit_neg_grad_sum, with_sum
from .chat import encode_chats
from .controls import select_lossmatch
from .directions import POSITIONS
from .extract import load_direction
from .progress import log, task
from .study import SFTSet, Study, ensure_sft
from .summarise import summarise
from .tracing import NonFiniteError, capture_gradients

LOSSMATCH = "lossmatch"


def condition_prompts(study: Study, sft: SFTSet, wanted: list[str]) -> dict[str, str]:
    conds = dict(study.cfg.align.conditions)
    if LOSSMATCH in wanted:
        conds[LOSSMATCH] = select_lossmatch(study, sft)["chosen_prompt"]
    unknown = [c for c in wanted if c not in conds]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; configured: {sorted(conds)} (+ {LOSSMATCH})")
    return {c: conds[c] for c in wanted}


def measure_condition(study: Study, name: str, system: str, sft: SFTSet, v: torch.Tensor) -> dict[str, Any]:
    """Gradient metrics for every SFT example under one training-time system prompt."""
    cfg = study.cfg.align
    unit_sum: torch.Tensor | None = None
    cos, proj, norm, loss = [], [], [], []
    n = len(sft.prompts)
    with task(f"align: {name}", n) as adv:
        for s in range(0, n, cfg.batch_size):
            batch = encode_chats(
                study.loaded.tokenizer, system, sft.prompts[s : s + cfg.batch_size],
                sft.completions[s : s + cfg.batch_size], n_assistant=cfg.n_assistant_tokens,
            )
            try:
                res = capture_gradients(study.tlm, batch, gradient_index(batch))
            except NonFiniteError as err:
                raise NonFiniteError(f"condition {name}, examples {sft.ids[s:s + cfg.batch_size]}: {err}") from err
            g = with_sum(res.grads)
            m = metrics(g, v)
            bad = torch.isnan(m.cos)
            if bad.any():
                b, l, p = bad.nonzero()[0].tolist()
                raise NonFiniteError(f"zero gradient (no angle) for {sft.ids[s + b]} at layer {l}, position {p}")
            u = unit_neg_grad_sum(g)
            unit_sum = u if unit_sum is None else unit_sum + u
            cos.append(m.cos)
            proj.append(m.proj)
            norm.append(m.norm)
            loss.append(res.loss)
            adv(batch.size)
    return {
        "condition": name,
        "system_prompt": system,
        "ids": list(sft.ids),
        "positions": position_names(cfg.n_assistant_tokens),
        "cos": torch.cat(cos),
        "proj": torch.cat(proj),
        "norm": torch.cat(norm),
        "loss": torch.cat(loss),
        "mean_unit_neg_grad": (unit_sum / n).float(),  # (L, P, d): all the random-direction null needs
        "direction_position": cfg.direction_position,
    }


def run_align(study: Study, condition: str) -> dict[str, Any]:
    """Measure one condition, or all of them (``'all'``) followed by the summary with controls."""
    t0 = time.time()
    v_all, meta = load_direction(study)
    v = v_all[:, POSITIONS.index(study.cfg.align.direction_position)]
    sft = ensure_sft(study)
    study.prov.fact("sft_excluded", sft.excluded)
    wanted = [*study.cfg.align.conditions, LOSSMATCH] if condition == "all" else [condition]
    prompts = condition_prompts(study, sft, wanted)
    out_dir = study.run_dir / A.ALIGN_DIR
    for name, system in prompts.items():
        res = measure_condition(study, name, system, sft, v)
        res["layer"] = meta["layer"]
        A.save_torch(out_dir / f"cond_{name}.pt", res)
        log(f"align {name}: mean loss {float(res['loss'].mean()):.4f}, n={len(res['ids'])}")
    study.prov.stage(f"align_{condition}", time.time() - t0, conditions=list(prompts))
    return summarise(study)
