"""The content-leak control with a dial (issue 16): set k so the leak lowers the SFT loss as much as a target prompt.

The dial is matched on the first ``align.lossmatch_examples`` SFT examples, or on all of them with
``leak.match_examples = "all"`` (issue 23: the examples C2's loss-match cap reads).

For each target (the inoculation prompt, and the trait's wording variant that lowers the loss
most), the dial k (words of the model's own untraited answer quoted after the neutral prompt,
:mod:`nnsight_inoc.measures.leak`) is searched over a grid: the chosen k is the one whose mean
per-example loss reduction against neutral is closest to the target's; it *matches* when within
``leak.tolerance`` of the target's reduction. Reductions come with percentile bootstrap CIs over
the examples (paired: the same examples under every prompt). The leak prompts pass the same
trait-free check as the loss-matched pool: the model's answers under them must not show the
trait. The factorial conditions then cross each family's base prompt (``leak.families``: none /
the inoculation prompt) with every matched level and every ``leak.extra_words`` level: condition
``<family>_<target>`` at the level matched to a target (``leak_inoc`` is the loss-matched control of
``inoc``), ``<family>_w<k>`` at an extra level. Everything is written to ``align/leak.json``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import NEUTRAL_CONDITION
from nnsight_inoc.core.progress import log
from nnsight_inoc.data.traits import score_texts
from nnsight_inoc.measures.leak import Prompting
from nnsight_inoc.probes.losses import example_losses
from nnsight_inoc.report.leak_sections import dial_words
from nnsight_inoc.stages.lossmatch import passes_trait_check
from nnsight_inoc.stats.bootstrap import bootstrap_mean_ci_by_col
from nnsight_inoc.study import SFTSet, Study, answers

STRONGEST = "strongest_variant"


def dial_grid(max_words: int) -> list[int]:
    """Dial levels tried: about geometric from 1 to ``max_words`` (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, ...)."""
    out, k = [], 1.0
    while round(k) <= max_words:
        if round(k) not in out:
            out.append(round(k))
        k *= 1.41
    return out


def _reduction(neutral: np.ndarray, other: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """Mean per-example loss reduction neutral - other (nats) with its bootstrap CI over examples."""
    est, lo, hi = bootstrap_mean_ci_by_col((neutral - other)[:, None], n_boot=n_boot, rng=seed)
    return {"mean": float(est[0]), "lo": float(lo[0]), "hi": float(hi[0])}


def losses(study: Study, system: str | list[str], users: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    """(n,) per-example SFT losses under one prompt or one prompt per example (``loss_batch_size`` per pass)."""
    return example_losses(study.tlm, study.loaded.tokenizer, system, users, completions, study.cfg.loss_batch_size)


def select_leak(study: Study, sft: SFTSet) -> dict[str, Any]:
    """Search the dial for every target, check the matched leak prompts are trait-free, write align/leak.json.

    Reuses a leak.json made with the same targets, template, examples and grid. ValueError when
    the SFT set has no untraited answers, a target is unknown, or no leak prompt passes the check.
    """
    cfg, acfg = study.cfg.leak, study.cfg.align
    path = study.layout.leak
    if sft.untraited is None:
        raise ValueError("the content-leak control needs the model's untraited answers (SFTSet.untraited)")
    n = len(sft.prompts) if cfg.match_examples == "all" else min(acfg.lossmatch_examples, len(sft.prompts))
    users, comps, untraited = sft.prompts[:n], sft.completions[:n], sft.untraited[:n]
    grid = sorted((set(cfg.words) if cfg.words else set(dial_grid(cfg.max_words))) | set(cfg.extra_words))
    key = {"targets": cfg.targets, "template": cfg.template, "n_examples": n, "grid": grid,
           "families": cfg.families, "tolerance": cfg.tolerance, "extra_words": cfg.extra_words}
    if path.is_file():
        prev = A.read_json(path)
        if prev.get("key") == key:
            return prev
    t0 = time.time()
    nb, seed = acfg.n_bootstrap, study.cfg.seed
    neutral_prompt = acfg.conditions[NEUTRAL_CONDITION]
    neutral = losses(study, neutral_prompt, users, comps)
    targets = _targets(study, cfg.targets, neutral, users, comps)
    def trial(k: int) -> dict[str, Any]:
        leak = Prompting(neutral_prompt, k, cfg.template).systems(untraited)
        return {"words": k, "reduction": _reduction(neutral, losses(study, leak, users, comps), nb, seed)}

    curve = [trial(k) for k in grid]
    matched: dict[str, Any] = {}
    for name, (prompt, target_loss) in targets.items():
        want = _reduction(neutral, target_loss, nb, seed)
        refine(curve, want["mean"], cfg.tolerance, trial)
        best = min(curve, key=lambda c: abs(c["reduction"]["mean"] - want["mean"]))
        share = abs(best["reduction"]["mean"] - want["mean"]) / abs(want["mean"]) if want["mean"] else float("inf")
        matched[name] = {"prompt": prompt, "reduction": want, "words": best["words"], "achieved": best["reduction"],
                         "gap_share": share, "matched": share <= cfg.tolerance}
        log(f"leak dial for {name}: {dial_words(matched[name])}")
    labels = level_labels(matched, cfg.extra_words)
    levels = sorted(labels.values())
    check = _trait_check(study, levels)
    conditions = {f"{family}_{label}": {"base_condition": base, "base": acfg.conditions[base], "words": k,
                                        "matched_to": label if label in matched else None}
                  for family, base in cfg.families.items() for label, k in labels.items()}
    out = {"key": key, "template": cfg.template, "n_examples": n, "neutral_mean_loss": float(neutral.mean()),
           "curve": curve, "targets": matched, "levels": levels, "conditions": conditions, "check": check,
           "seconds": time.time() - t0}
    A.write_json(path, out)
    return out


def refine(curve: list[dict[str, Any]], want: float, tolerance: float, trial: Any, max_trials: int = 8) -> None:
    """Bisect the dial between the two tried levels whose reductions bracket ``want`` until one is within
    ``tolerance`` of it (a share of ``want``), the bracket is adjacent integers, or ``max_trials`` more levels
    were tried; new levels are appended to ``curve`` (kept sorted by words).

    Bisection assumes the reduction rises with k between the two levels; where it does not, the search
    simply stops at the closest level tried, and leak.json says how far off it is.
    """
    for _ in range(max_trials):
        curve.sort(key=lambda c: c["words"])
        if any(abs(c["reduction"]["mean"] - want) <= tolerance * abs(want) for c in curve):
            return
        pairs = [(a, b) for a, b in zip(curve, curve[1:])
                 if min(a["reduction"]["mean"], b["reduction"]["mean"]) < want
                 <= max(a["reduction"]["mean"], b["reduction"]["mean"])]
        if not pairs:
            return
        a, b = pairs[0]
        if b["words"] - a["words"] <= 1:
            return
        curve.append(trial((a["words"] + b["words"]) // 2))
    curve.sort(key=lambda c: c["words"])


def level_labels(matched: dict[str, Any], extra_words: Sequence[int]) -> dict[str, int]:
    """Label -> dial level of the factorial: each target's matched level named by the target (the report reads
    ``leak_<target>`` as the loss-matched control of ``<target>``), then every extra level not already there,
    named ``w<k>``. Two targets matched at one level share the first target's label (one set of runs)."""
    out: dict[str, int] = {}
    for name, m in matched.items():
        if m["words"] not in out.values():
            out[name] = int(m["words"])
    for k in extra_words:
        if k not in out.values():
            out[f"w{k}"] = int(k)
    return out


def _targets(study: Study, names: Sequence[str], neutral: np.ndarray, users: Sequence[str],
             completions: Sequence[str]) -> dict[str, tuple[str, np.ndarray]]:
    """Each target's prompt and per-example losses; 'strongest_variant' resolved to the variant lowering it most."""
    conds = dict(study.cfg.align.conditions)
    variants = dict(study.trait.variants)
    out: dict[str, tuple[str, np.ndarray]] = {}
    for name in names:
        if name == STRONGEST:
            if not variants:
                raise ValueError("leak.targets names 'strongest_variant' but the trait has no wording variants")
            per = {v: losses(study, p, users, completions) for v, p in variants.items()}
            best = max(per, key=lambda v: float((neutral - per[v]).mean()))
            out[best] = (variants[best], per[best])
        elif name in conds or name in variants:
            prompt = conds.get(name) or variants[name]
            out[name] = (prompt, losses(study, prompt, users, completions))
        else:
            raise ValueError(f"leak.targets names {name!r}, which is neither a condition ({sorted(conds)}) nor a "
                             f"variant of the trait ({sorted(variants)}) nor {STRONGEST!r}")
    return out


def _trait_check(study: Study, levels: Sequence[int]) -> dict[str, Any]:
    """The loss-matched pool's behaviour check for every family's leak prompts: answers must not show the trait.

    The check prompts' untraited answers are the model's own answers under the neutral prompt.
    ValueError naming the level when a leak prompt fails.
    """
    acfg, cfg = study.cfg.align, study.cfg.leak
    users = [p.text for p in study.splits.eval[: acfg.lossmatch_check_prompts]]
    tokens = study.cfg.extract.max_new_tokens
    neutral_answers = answers(study, acfg.conditions[NEUTRAL_CONDITION], users, tokens, "leak check: neutral")
    ref = score_texts(study.trait, neutral_answers)
    reference = ref.mean if acfg.lossmatch_trait_reference == "neutral" else 0.0
    out: dict[str, Any] = {"reference": reference, "max_trait_score": acfg.lossmatch_max_trait_score, "levels": {}}
    for k in levels:
        systems = Prompting(acfg.conditions[NEUTRAL_CONDITION], k, cfg.template).systems(neutral_answers)
        got = score_texts(study.trait, answers(study, systems, users, tokens, f"leak check: {k} words"))
        ok = passes_trait_check(got.mean, reference, acfg.lossmatch_max_trait_score)
        out["levels"][str(k)] = {"answer_trait_score": got.mean, "n_unscored": got.n_unscored, "eligible": ok}
        if not ok:
            raise ValueError(f"the {k}-word content leak elicits the trait (answers score {got.mean:.3f} against "
                             f"{reference:.3f}, limit {acfg.lossmatch_max_trait_score}); change leak.template")
    return out


def leak_conditions(study: Study) -> dict[str, Prompting]:
    """The factorial's leak conditions from align/leak.json (empty when the control is off or has not run)."""
    path = study.layout.leak
    if not study.cfg.leak.targets or not path.is_file():
        return {}
    rec = A.read_json(path)
    return {name: Prompting(c["base"], int(c["words"]), rec["template"]) for name, c in rec["conditions"].items()}


def longest_quote(study: Study) -> int:
    """W (issue 22): the most words any condition of the leak factorial quotes (matched and extra levels), 0 when
    the control is off or has not run. Alignment beyond the quote is read after the completion's first W words."""
    return max((p.leak_words for p in leak_conditions(study).values()), default=0)
