"""Stage `align`: per-example gradient alignment with v(l) under each training condition.

Each condition's measurements are saved on their own (``align/cond_<name>.pt``) so
``align --condition inoc`` and ``--condition all`` compose; :func:`summarise` then
reads whatever conditions exist and applies the controls.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import LOSSMATCH_CONDITION, StudyConfig
from nnsight_inoc.core.errors import UsageProblem
from nnsight_inoc.core.progress import log, task
from nnsight_inoc.measures.leak import Prompting
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.probes.losses import example_losses
from nnsight_inoc.stages.align_summary import summarise
from nnsight_inoc.stages.leak import leak_conditions, longest_quote, select_leak
from nnsight_inoc.stages.lossmatch import select_lossmatch
from nnsight_inoc.stages.other_traits import other_trait_directions
from nnsight_inoc.study import SFTSet, Study, ensure_sft, load_directions

BEYOND_METHOD = ("the first n_assistant_tokens completion tokens after the completion's first W whitespace-separated "
                 "words, W = the longest quote of the leak factorial; the first such token is the first whose "
                 "character span (tokenizer offsets) starts at or after the end of word W; examples with fewer text "
                 "tokens beyond are excluded for every condition")


def check_condition(cfg: StudyConfig, condition: str) -> None:
    """Refuse a condition name the config does not have, before any model or file is touched (a usage error).

    Content-leak conditions are named ``<family>_<target or w<k>>`` (stages/leak.py); with ``[leak]`` targets set,
    any name under a family prefix is let through here and checked against align/leak.json once it exists.
    """
    allowed = [*cfg.align.conditions, LOSSMATCH_CONDITION, "all"]
    leak_family = cfg.leak.targets and any(condition.startswith(f + "_") for f in cfg.leak.families)
    if condition not in allowed and not leak_family:
        raise UsageProblem(f"align --condition {condition!r}: unknown condition; choose from {', '.join(allowed)} "
                           "(align.conditions in the config)" + (f", or a content-leak condition "
                           f"({', '.join(f + '_...' for f in cfg.leak.families)})" if cfg.leak.targets else ""))


def condition_prompts(study: Study, sft: SFTSet, wanted: list[str]) -> dict[str, Prompting]:
    """Condition -> training prompt for the wanted conditions; the loss-matched and the content-leak controls
    are chosen on demand (``align/lossmatch.json``, ``align/leak.json``)."""
    conds = {n: Prompting(p) for n, p in study.cfg.align.conditions.items()}
    if LOSSMATCH_CONDITION in wanted:
        conds[LOSSMATCH_CONDITION] = Prompting(select_lossmatch(study, sft)["chosen_prompt"])
    if study.cfg.leak.targets and any(w not in conds for w in wanted):
        select_leak(study, sft)
        conds.update(leak_conditions(study))
    unknown = [c for c in wanted if c not in conds]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; configured: {sorted(conds)} (+ {LOSSMATCH_CONDITION})")
    return {c: conds[c] for c in wanted}


def measure_condition(study: Study, name: str, prompting: Prompting | str, sft: SFTSet, v: torch.Tensor,
                      beyond_words: int = 0, unit_layer: int | None = None) -> dict[str, Any]:
    """Gradient metrics for every SFT example under one training-time prompt (what cond_<name>.pt holds).

    Also the loss split (issue 16): ``content_loss`` is each example's loss of its UNTRAITED answer
    under the same prompt (the content part); ``loss - content_loss`` is the trait part.

    Issue 22: ``beyond_words`` = W > 0 adds ``beyond`` (alignment at the completion tokens after the first W
    words, outside every quoted leak); ``unit_layer`` adds ``units`` (each example's -g/|g| at that layer and
    a_sum, what C1's structured null projects on other directions). Neither changes any other entry.
    """
    prompting = Prompting(prompting) if isinstance(prompting, str) else prompting
    cfg = study.cfg.align
    n = len(sft.prompts)
    systems = prompting.systems(sft.untraited)
    with task(f"align: {name}", n) as adv:
        m = gradient_metrics(study.tlm, study.loaded.tokenizer, systems, sft.prompts, sft.completions, v,
                             n_assistant=cfg.n_assistant_tokens, batch_size=cfg.batch_size, ids=sft.ids,
                             label=f"condition {name}", on_batch=adv, beyond_words=beyond_words,
                             keep_units=None if unit_layer is None else (unit_layer, "a_sum"))
    content = None
    if sft.untraited is not None:
        content = torch.from_numpy(example_losses(study.tlm, study.loaded.tokenizer, systems, sft.prompts,
                                                  sft.untraited, study.cfg.loss_batch_size))
    extra: dict[str, Any] = {}
    if m.units is not None:
        extra["units"] = {"layer": unit_layer, "position": "a_sum", "neg_unit": m.units}
    if m.beyond is not None:
        b = m.beyond
        extra["beyond"] = {"words": b.words, "positions": b.positions, "rows": b.rows, "excluded": b.excluded,
                           "method": BEYOND_METHOD, "cos": b.cos, "proj": b.proj, "norm": b.norm,
                           "mean_unit_neg_grad": (b.unit_neg_grad_sum / max(len(b.rows), 1)).float()}
    return {
        **extra,
        "condition": name,
        "system_prompt": prompting.base,
        "leak": prompting.record(),
        "ids": list(sft.ids),
        "positions": m.positions,
        "cos": m.cos,
        "proj": m.proj,
        "norm": m.norm,
        "loss": m.loss,
        "content_loss": content,  # (n,) CE of the untraited answer under the same prompt; None without one
        "mean_unit_neg_grad": (m.unit_neg_grad_sum / n).float(),  # (L, P, d): all the random-direction null needs
        "direction_position": cfg.direction_position,
    }


def run_align(study: Study, condition: str) -> dict[str, Any]:
    """Measure one condition, or all of them (``'all'``: the configured ones, the loss-matched control and the
    content-leak factorial when ``[leak]`` names targets) followed by the summary with controls."""
    check_condition(study.cfg, condition)  # before the directions and SFT set are read
    t0 = time.time()
    v_all, meta = load_directions(study)
    v = v_all[:, list(meta["positions"]).index(study.cfg.align.direction_position)]
    sft = ensure_sft(study)
    study.prov.fact("sft_excluded", sft.excluded)
    wanted = [*study.cfg.align.conditions, LOSSMATCH_CONDITION] if condition == "all" else [condition]
    if study.cfg.leak.targets:  # every condition needs W, the longest quote, to read beyond it (issue 22)
        select_leak(study, sft)
        if condition == "all":
            wanted += list(leak_conditions(study))
    words = longest_quote(study)
    other_trait_directions(study)  # C1's structured null; reused from extract when there
    prompts = condition_prompts(study, sft, wanted)
    for name, prompting in prompts.items():
        res = measure_condition(study, name, prompting, sft, v, beyond_words=words, unit_layer=int(meta["layer"]))
        res["layer"] = meta["layer"]
        A.save_torch(study.layout.align_condition(name), res)
        log(f"align {name}: mean loss {float(res['loss'].mean()):.4f}, n={len(res['ids'])}")
    study.prov.stage(f"align_{condition}", time.time() - t0, conditions=list(prompts))
    return summarise(study)
