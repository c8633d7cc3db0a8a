"""Building a finetune plan by hand in tests (the stages build theirs with ``stages.plan.build_plan``)."""

from __future__ import annotations

import torch

from nnsight_inoc.measures.steering import SteerSpec
from nnsight_inoc.stages.plan import FinetunePlan, RunSpec
from nnsight_inoc.study import SFTSet, Study


def plan_of(study: Study, sft: SFTSet, v: torch.Tensor, runs: list[RunSpec], drift_prompts: list[str] | None = None,
            layer: int = 0) -> FinetunePlan:
    return FinetunePlan(which="main", v=v.detach().float().cpu(), layer=layer, sft=sft,
                        drift_prompts=drift_prompts or [], neutral_prompt=study.cfg.align.conditions["neutral"],
                        runs=runs)


def one_run(study: Study, sft: SFTSet, v: torch.Tensor, condition: str, system: str, seed: int,
            steer: SteerSpec | None = None, drift_prompts: list[str] | None = None) -> tuple[FinetunePlan, RunSpec]:
    run = RunSpec(condition, seed, system, steer)
    return plan_of(study, sft, v, [run], drift_prompts), run
