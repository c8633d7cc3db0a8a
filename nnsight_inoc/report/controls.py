"""Which condition is the loss-matched control of a comparison: the content leak when measured, else the pool prompt.

Issue 16 adds a loss-matched control with a dial: per-example system prompts that give away part of
*what* the answer says (its untraited content), tuned so that their SFT-loss reduction matches a target
condition's. Naming convention (agreed with the measurement side): the leak matched to condition
``<target>`` is the condition ``leak_<target>`` (``leak_inoc``, ``leak_inoc_para2``, ...). Runs without it
fall back to today's trait-free pool prompt ``lossmatch`` (``align/lossmatch.json``), and every rule
says which control it used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

LEAK_PREFIX = "leak_"
POOL_CONTROL = "lossmatch"
TARGET = "inoc"
LEAK_MATCH_TOLERANCE = 0.10  # issue 16: the leak's loss reduction within +-10% of its target's gap to neutral


def leak_condition(target: str) -> str:
    """The content-leak control matched to ``target``."""
    return f"{LEAK_PREFIX}{target}"


def leak_target(name: str) -> str | None:
    """The condition a ``leak_<target>`` control was matched to; None for other names."""
    return name[len(LEAK_PREFIX):] if name.startswith(LEAK_PREFIX) and len(name) > len(LEAK_PREFIX) else None


def matched_control(conditions: Iterable[str], target: str = TARGET) -> str | None:
    """``leak_<target>`` when measured, else ``lossmatch`` when measured, else None."""
    names = set(conditions)
    for c in (leak_condition(target), POOL_CONTROL):
        if c in names:
            return c
    return None


def control_kind(control: str) -> str:
    """Words for the report: what kind of loss match ``control`` is."""
    if leak_target(control) is not None:
        return f"content leak matched to {leak_target(control)} (per-example prompts)"
    return "trait-free pool prompt (align/lossmatch.json)"


def describe_prompt(system_prompt: Any, meta: Mapping[str, Any] | None = None) -> str:
    """One line for a condition's training system prompt: the prompt itself, or for per-example prompts
    (a list, one per example) the template when recorded, else the first prompt, marked per-example."""
    if isinstance(system_prompt, str):
        return f'"{system_prompt}"'
    if isinstance(system_prompt, (list, tuple)) and system_prompt:
        template = (meta or {}).get("system_prompt_template")
        shown = f'template "{template}"' if template else f'first "{system_prompt[0]}"'
        return f"per-example ({len(system_prompt)} prompts, {len(set(system_prompt))} distinct; {shown})"
    raise ValueError(f"a system prompt must be a string or a non-empty list of strings, got {system_prompt!r}")


def compact_prompt(system_prompt: Any, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary's form of a training prompt: ``{"system_prompt": str}``, plus for per-example prompts
    ``per_example_prompts = {n, n_distinct, template}`` (the first prompt stands in ``system_prompt``; the
    full list stays in ``align/cond_<name>.pt``)."""
    if isinstance(system_prompt, str):
        return {"system_prompt": system_prompt}
    describe_prompt(system_prompt)  # raises on anything but a non-empty list of strings
    return {"system_prompt": system_prompt[0],
            "per_example_prompts": {"n": len(system_prompt), "n_distinct": len(set(system_prompt)),
                                    "template": (meta or {}).get("system_prompt_template")}}


def prompt_label(cond: Mapping[str, Any]) -> str:
    """One line for a condition entry of the align summary (or a train.json), per-example prompts marked."""
    per = cond.get("per_example_prompts")
    if per is None:
        return describe_prompt(cond["system_prompt"])
    template = per.get("template")  # JSON null reads back as NaN in the report: only a string is a template
    shown = f'template "{template}"' if isinstance(template, str) and template else f'first "{cond["system_prompt"]}"'
    return f"per-example ({per['n']} prompts, {per['n_distinct']} distinct; {shown})"
