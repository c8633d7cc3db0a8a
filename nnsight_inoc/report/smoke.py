"""Whether a run's numbers can mean anything: the rule that marks a smoke run in its report.

A smoke run (``cli.py run --preset smoke``) exercises every stage on a tiny model with tiny sizes; its
labels come out of the same rules and read like findings ("Answer: not supported"). The report says at
the top, and in its answer line, that such a run's numbers mean nothing. The rule reads the run's
resolved config only (``config.toml``), so it is the same for every reader:

* the model is the smoke preset's model (:data:`SMOKE_MODEL`, read from ``configs/smoke.toml``), or
* any size is below its floor (:data:`FLOORS`): fewer SFT examples, LoRA steps, drift prompts or seeds than
  a trained comparison can rest on. The published presets are far above every floor.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any, Mapping

# (section, key, floor, words): a run below any floor is a smoke run. The seeds floor is the drift verdicts' own
# minimum of paired seeds (report.contrast_rules.MIN_SEEDS).
FLOORS = (("data", "n_sft", 50, "SFT examples"), ("finetune", "steps", 10, "LoRA steps"),
          ("finetune", "n_drift_prompts", 10, "drift prompts"), ("finetune", "seeds", 3, "seed(s)"))
LINE = "Smoke run: its model and sizes make every number below meaningless"


def _smoke_model() -> str:
    text = resources.files("nnsight_inoc.configs").joinpath("smoke.toml").read_text()
    return tomllib.loads(text)["model"]["name"]


SMOKE_MODEL = _smoke_model()


def smoke_reasons(config: Mapping[str, Any]) -> list[str]:
    """Why a run with this resolved config is a smoke run; [] when it is not."""
    out = []
    model = (config.get("model") or {}).get("name")
    if model == SMOKE_MODEL:
        out.append(f"model {model} (the smoke preset's)")
    for section, key, floor, words in FLOORS:
        value = (config.get(section) or {}).get(key)
        n = len(value) if isinstance(value, (list, tuple)) else value
        if isinstance(n, (int, float)) and n < floor:
            out.append(f"{n} {words} (< {floor})")
    return out


def smoke_line(config: Mapping[str, Any]) -> str | None:
    """The report's first line for a smoke run ('Smoke run: ... meaningless (model ..., 2 LoRA steps, ...).'),
    None otherwise."""
    why = smoke_reasons(config)
    return f"**{LINE}** ({'; '.join(why)}): it tests that every stage runs, not the hypothesis." if why else None
