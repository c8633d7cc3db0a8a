"""Every training condition with the prompt it really trains under, and what each causal arm does to the gradient.

A leak condition's summary entry records its *base* prompt (the per-example prompts live in
``align/cond_<name>.pt``), so a reader saw "You are a helpful assistant." for ``leak_inoc`` although it trains
under that prompt plus a quote of the answer. Here a leak condition is shown as its template and one real
example (the first SFT example's untraited answer, from ``sft_completions.json``); an arm as its base prompt
and its edit of the gradient.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from nnsight_inoc.core.artifacts import read_json
from nnsight_inoc.measures.leak import leak_prompt
from nnsight_inoc.report.controls import prompt_label
from nnsight_inoc.report.load import Run, drift_summary
from nnsight_inoc.report.palette import ARMS, condition_order, family
from nnsight_inoc.report.render import Block

ARM_BASE = {"zero_v": "neutral", "zero_rand": "neutral", "flip_v": "neutral", "restore_v": "inoc"}
ARM_EDIT = {
    "zero_v": "removes the component of the residual-stream gradient along v(l) at every edited layer",
    "zero_rand": "removes the component along a fixed random unit direction instead (the control of zero_v)",
    "flip_v": "reverses the component of the gradient along v(l)",
    "restore_v": "scales the component along v(l) per layer so that the step-0 probe's mean cos(-g, v) at a_sum "
                 "equals neutral's (puts back what inoculation took away)",
}


def _unreached(run: Run, arm: str) -> str:
    """For restore_v: its factors (finetune/restore_v.json) at the reporting layer and over the edited layers, and the
    layers where no scale reached neutral's alignment, said, not hidden."""
    path = run.layout.restore_record
    if arm != "restore_v" or not path.is_file():
        return ""
    rec = json.loads(path.read_text())["record"]
    factors = {int(l): float(s) for l, s in rec.get("factors", {}).items()}
    out = ""
    if factors:
        req = rec.get("required_layer")
        at = f"s = {factors[req]:.3g} at the reporting layer {req}, " if req in factors else ""
        out = f"; factors {at}{min(factors.values()):.3g} to {max(factors.values()):.3g} over {len(factors)} layers"
    gaps = rec.get("unreached", {})
    if not gaps:
        return out + "; neutral's alignment reached at every edited layer"
    return (out + "; at layers " + ", ".join(f"{l} (gap {g:.4f})" for l, g in gaps.items())
            + " no scale reached it: the nearest was used")


def _first_untraited(run: Run) -> str | None:
    path = run.layout.sft_completions
    if not path.is_file():
        return None
    data = read_json(path)
    answers = data.get("neutral_answers") or data.get("source_answers") or []
    return answers[0] if answers else None


def _leak_row(name: str, cond: Mapping[str, Any], example_answer: str | None) -> str:
    leak = cond["leak"]
    base, k, template = cond["system_prompt"], int(leak["words"]), leak["template"]
    shown = f"template: {base} {template.format(words=f'[first {k} words of the untraited answer]')}"
    if example_answer is None:
        return f"{shown} (one per example; sft_completions.json absent, so no example)"
    return f"{shown}; example (first SFT example): {leak_prompt(base, example_answer, k, template)}"


def _trained_prompts(run: Run) -> dict[str, str]:
    """Condition -> the system prompt its first trained run recorded (train.json), for the finetune summary's
    conditions; {} without a summary."""
    summ = drift_summary(run.dir)
    out: dict[str, str] = {}
    for r in (summ or {}).get("rows", []):
        c = r["condition"]
        if c not in out:
            path = run.layout.run(c, r["seed"]).train_json
            prompt = read_json(path).get("system_prompt") if path.is_file() else None
            out[c] = prompt if isinstance(prompt, str) else "(per-example prompts; see train.json)"
    return out


def condition_rows(run: Run) -> list[list[str]]:
    """[condition, family, the prompt it trains under, what else differs] for every align condition and arm."""
    conds = run.align["conditions"]
    arms = [a for a in (run.config.get("intervene") or {}).get("arms", []) if a in ARMS]
    trained = _trained_prompts(run)
    answer = _first_untraited(run)
    rows = []
    for name in condition_order([*conds, *arms, *trained]):
        if name not in conds and name not in ARM_BASE:  # trained only (a wording variant, a steering run)
            rows.append([name, family(name), f'"{trained[name]}"', "-"])
            continue
        if name in ARM_BASE and name not in conds:
            base = ARM_BASE[name]
            prompt = run.config.get("align", {}).get("conditions", {}).get(base) or conds.get(base, {}).get(
                "system_prompt", "?")
            rows.append([name, family(name), f'"{prompt}" ({base}\'s prompt)', ARM_EDIT[name] + _unreached(run, name)])
            continue
        cond = conds[name]
        leak = cond.get("leak")
        if isinstance(leak, Mapping) and {"words", "template"} <= set(leak) and "per_example_prompts" not in cond:
            rows.append([name, family(name), _leak_row(name, cond, answer),
                         f"quotes the first {cond['leak']['words']} words of the model's own untraited answer"])
        else:
            rows.append([name, family(name), prompt_label(cond), "-"])
    return rows


def section_conditions(run: Run) -> list[Block]:
    return [("h2", "Training conditions: the prompt each one trains under"),
            ("p", "Same SFT examples, order, budget and LoRA initialisation per seed; only the system prompt differs, "
                  "or, for a causal arm, the gradient during training."),
            ("table", ["condition", "family", "trains under", "what else differs"], condition_rows(run))]
