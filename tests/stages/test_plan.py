"""The finetune plan: run order for executors, and grouping by seed for grouped training."""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.stages.plan import FinetunePlan, RunSpec


def _plan(conditions: list[str], seeds: list[int]) -> FinetunePlan:
    runs = [RunSpec(c, s, f"prompt {c}") for c in conditions for s in seeds]
    return FinetunePlan(which="main", v=torch.zeros(2, 3), layer=0, sft=None, drift_prompts=[],
                        neutral_prompt="prompt a", runs=runs)


def _pairs(runs: list[RunSpec]) -> list[tuple[str, int]]:
    return [(r.condition, r.seed) for r in runs]


def test_seed_major_order_and_restriction_to_configured_seeds():
    assert _pairs(_plan(["a", "b"], [0, 1]).seed_major()) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    plan = _plan(["a", "b"], [0, 1, 2])
    assert _pairs(plan.seed_major(only_seeds=[2, 1])) == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    with pytest.raises(ValueError, match="not in finetune.seeds"):
        _plan(["a"], [0, 1]).seed_major(only_seeds=[3])
    with pytest.raises(ValueError, match="empty"):
        _plan(["a"], [0, 1]).seed_major(only_seeds=[])


def test_seed_order_follows_the_config_not_sorting():
    assert _pairs(_plan(["a"], [2, 0]).seed_major()) == [("a", 2), ("a", 0)]


def test_runs_named_and_grouped_by_seed():
    plan = _plan(["neutral", "inoc"], [0, 1])
    assert [r.name for r in plan.runs] == ["neutral_seed0", "neutral_seed1", "inoc_seed0", "inoc_seed1"]
    assert {s: [r.condition for r in rs] for s, rs in plan.by_seed().items()} == {0: ["neutral", "inoc"],
                                                                                   1: ["neutral", "inoc"]}
    assert plan.conditions() == {"neutral": "prompt neutral", "inoc": "prompt inoc"}
