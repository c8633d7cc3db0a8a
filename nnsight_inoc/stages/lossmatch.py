"""Control A: a system prompt that lowers the SFT loss like the inoculation does, without the trait.

If inoculation moved the gradient's angle only because it explains the data (lower
loss, smaller and differently shaped gradients), a trait-free prompt with the same
loss would move it as much. The candidate pool is checked twice for trait content:
by a word list, and by scoring the model's own answers under each candidate.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.progress import log, task
from nnsight_inoc.data.traits import score_texts
from nnsight_inoc.data.traits.checks import lossmatch_candidates
from nnsight_inoc.probes.losses import example_losses
from nnsight_inoc.study import SFTSet, Study, answers


def mean_losses(study: Study, system: str, users: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    """(n,) per-example SFT losses (nats) under ``system``, ``loss_batch_size`` examples per forward pass."""
    return example_losses(study.tlm, study.loaded.tokenizer, system, users, completions, study.cfg.loss_batch_size)


def passes_trait_check(score: float | None, reference: float, max_excess: float) -> bool:
    """A candidate passes when its answers could be scored and score at most `max_excess` above `reference`."""
    return score is not None and score - reference <= max_excess


def select_lossmatch(study: Study, sft: SFTSet) -> dict[str, Any]:
    """Pick the trait-free candidate whose mean SFT loss is closest to the target condition's."""
    path = study.layout.lossmatch
    cfg = study.cfg.align
    pool = lossmatch_candidates(study.trait, cfg.lossmatch_pool)
    n = min(cfg.lossmatch_examples, len(sft.prompts))
    users, comps = sft.prompts[:n], sft.completions[:n]
    target_prompt = cfg.conditions[cfg.lossmatch_target]
    if path.is_file():
        prev = A.read_json(path)
        if prev.get("pool") == pool and prev.get("target_prompt") == target_prompt and prev.get("n_examples") == n:
            return prev
    t0 = time.time()
    target_loss = float(mean_losses(study, target_prompt, users, comps).mean())
    neutral_loss = float(mean_losses(study, cfg.conditions["neutral"], users, comps).mean())
    cands: list[dict[str, Any]] = []
    with task("loss-matched pool: losses", len(pool)) as adv:
        for p in pool:
            loss = float(mean_losses(study, p, users, comps).mean())
            cands.append({"prompt": p, "mean_loss": loss, "gap": loss - target_loss})
            adv(1)
    # Behaviour check in order of closeness, until one candidate passes.
    check_users = [p.text for p in study.splits.eval[: cfg.lossmatch_check_prompts]]
    reference = 0.0
    if cfg.lossmatch_trait_reference == "neutral":
        ref = score_texts(study.trait, answers(study, cfg.conditions["neutral"], check_users,
                                               study.cfg.extract.max_new_tokens, "loss-matched check: neutral"))
        if ref.mean is None:
            raise ValueError("the neutral prompt's check answers could not be scored; no reference for the check")
        reference = ref.mean
    chosen = None
    checked = []
    for c in sorted(cands, key=lambda c: abs(c["gap"])):
        ans = answers(study, c["prompt"], check_users, study.cfg.extract.max_new_tokens,
                      f"loss-matched candidate check: {c['prompt']!r}")
        s = score_texts(study.trait, ans)
        c["answer_trait_score"] = s.mean
        c["answer_n_unscored"] = s.n_unscored
        c["eligible"] = passes_trait_check(s.mean, reference, cfg.lossmatch_max_trait_score)
        checked.append(c)
        if c["eligible"]:
            chosen = c
            break
    if chosen is None:
        worst = ", ".join(f"{c['prompt'][:40]!r}: {c['answer_trait_score']}" for c in checked[:5])
        raise ValueError(
            f"no loss-matched candidate passed the behaviour check (mean trait score minus reference {reference:.3f} "
            f"must be <= align.lossmatch_max_trait_score={cfg.lossmatch_max_trait_score}); closest candidates: "
            f"{worst}; widen the pool, or for a trait whose scorer rates plain answers well above 0 set "
            "align.lossmatch_trait_reference = 'neutral'")
    out = {
        "target_condition": cfg.lossmatch_target,
        "target_prompt": target_prompt,
        "target_mean_loss": target_loss,
        "neutral_mean_loss": neutral_loss,
        "n_examples": n,
        "pool": pool,
        "candidates": cands,
        "chosen_prompt": chosen["prompt"],
        "chosen_gap": chosen["gap"],
        "gap_as_share_of_neutral_to_target": chosen["gap"] / (neutral_loss - target_loss)
        if neutral_loss != target_loss
        else None,
        "max_trait_score": cfg.lossmatch_max_trait_score,
        "trait_reference": cfg.lossmatch_trait_reference,
        "trait_reference_score": reference,
        "seconds": time.time() - t0,
    }
    A.write_json(path, out)
    log(f"loss-matched control: {chosen['prompt']!r} (gap {chosen['gap']:+.4f} nats vs {cfg.lossmatch_target})")
    return out
