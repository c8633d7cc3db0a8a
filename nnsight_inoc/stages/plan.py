"""The finetune plan: built once, executed by any executor (sequential, claim-based workers, grouped).

A plan holds everything a run needs that does not depend on which process trains it: the
direction probes and drift project onto, the SFT examples (in their one fixed order), the
drift prompts, and the runs (name, condition, system prompt, seed, steering). Executors
(:mod:`.executors`, :mod:`.workers`) take a plan and decide only where and in what order the
runs happen, so a run's files depend on the plan alone (tested: same numbers for one worker
or several). The runs of one seed share examples, order and LoRA init: :meth:`FinetunePlan.by_seed`
groups them for grouped multi-adapter training.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import LOSSMATCH_CONDITION, NEUTRAL_CONDITION
from nnsight_inoc.core.layout import run_name
from nnsight_inoc.core.progress import log
from nnsight_inoc.data.traits.checks import check_panel as check_panel_prompts
from nnsight_inoc.measures.intervention import InterveneSpec
from nnsight_inoc.measures.leak import DEFAULT_TEMPLATE, Prompting
from nnsight_inoc.measures.steering import SteerSpec, steer_specs
from nnsight_inoc.stages.intervene import arm_prompts, intervene_specs, restore_record
from nnsight_inoc.stages.leak import leak_conditions
from nnsight_inoc.study import (
    SFTSet,
    Study,
    ensure_sft,
    load_direction,
    load_directions,
)

WHICH = ("main", "variants", "all", "steering")


@dataclass(frozen=True)
class RunSpec:
    """One LoRA run: a training-time system prompt, with steering or a gradient intervention or neither, at one seed.

    ``system_prompt`` is the fixed prompt; a content-leak run (``leak_words`` > 0) gives every
    chat its own prompt, the fixed one followed by the first words of the model's untraited
    answer to that chat (:class:`~nnsight_inoc.measures.leak.Prompting`).
    """

    condition: str
    seed: int
    system_prompt: str
    steer: SteerSpec | None = None
    leak_words: int = 0
    leak_template: str = DEFAULT_TEMPLATE
    intervene: InterveneSpec | None = None  # a gradient-intervention arm (stages/intervene.py)

    @property
    def name(self) -> str:
        """The run's folder name, ``<condition>_seed<seed>``."""
        return run_name(self.condition, self.seed)

    @property
    def prompting(self) -> Prompting:
        return Prompting(self.system_prompt, self.leak_words, self.leak_template)


@dataclass
class FinetunePlan:
    """Every run of one ``finetune --which`` sweep and the inputs they share."""

    which: str
    v: torch.Tensor  # (L, d) float32 CPU: v(l) at the align stage's reporting position
    layer: int  # the reporting layer chosen by extract
    sft: SFTSet | None  # None in a plan built for drift only (no training, so no SFT answers needed)
    drift_prompts: list[str]  # held-out eval prompts answered before and after training
    neutral_prompt: str  # the test prompt drift is measured under
    runs: list[RunSpec]  # condition-major: every seed of a condition before the next condition

    def conditions(self) -> dict[str, str]:
        """Condition -> training system prompt (the fixed part of a leak condition's), in plan order."""
        return {r.condition: r.system_prompt for r in self.runs}

    def sft_systems(self, run: RunSpec) -> str | list[str]:
        """The system prompt of ``run`` for the SFT examples: one, or one per example (a content leak)."""
        if self.sft is None:
            raise ValueError("this finetune plan was built without the SFT set")
        return run.prompting.systems(self.sft.untraited)

    def seed_major(self, only_seeds: Sequence[int] | None = None) -> list[RunSpec]:
        """Every condition at the first seed before any at the second.

        Why: a sweep cut short by the device budget then leaves a complete sweep at fewer seeds
        (each condition has a run), not some conditions with all seeds and others with none.
        ``only_seeds`` restricts to some of the plan's seeds (ValueError for an unknown or empty list).
        """
        seeds = list(dict.fromkeys(r.seed for r in self.runs))  # the config's order
        if only_seeds is not None:
            bad = sorted(set(only_seeds) - set(seeds))
            if bad:
                raise ValueError(f"--seeds {bad} are not in finetune.seeds {seeds}")
            if not only_seeds:
                raise ValueError("--seeds is empty")
        use = [s for s in seeds if only_seeds is None or s in only_seeds]
        return [r for s in use for r in self.runs if r.seed == s]

    def restricted(self, conditions: Collection[str] | None = None, exclude: Collection[str] = ()) -> FinetunePlan:
        """The same plan with only the runs of ``conditions`` (all when None) minus ``exclude``.

        ValueError naming the plan's conditions when a condition asked for is not in it (excluding one
        that is absent is fine: it is not run either way).
        """
        known = set(self.conditions())
        unknown = sorted(set(conditions or ()) - known)
        if unknown:
            raise ValueError(f"conditions {unknown} are not in this plan ({sorted(known)})")
        runs = [r for r in self.runs if (conditions is None or r.condition in conditions) and r.condition not in exclude]
        return replace(self, runs=runs)

    def by_seed(self) -> dict[int, list[RunSpec]]:
        """Runs grouped by seed (the unit grouped training shares a batch over), conditions in plan order."""
        out: dict[int, list[RunSpec]] = {}
        for r in self.runs:
            out.setdefault(r.seed, []).append(r)
        return out


def training_conditions(study: Study, which: str) -> dict[str, str]:
    """Main conditions (incl. the loss-matched prompt if `align` chose one) and/or wording variants.

    ``steering``: the main conditions (the baselines it is compared with) plus every
    preventative-steering condition of ``[steering]``, each trained under the neutral prompt. The
    gradient-intervention arms of ``[intervene]`` are main conditions (each under its base prompt).
    """
    if which not in WHICH:
        raise ValueError(f"which must be main, variants, all or steering, not {which!r}")
    out: dict[str, str] = {}
    if which in ("main", "all", "steering"):
        out.update(study.cfg.align.conditions)
        lm = study.layout.lossmatch
        if lm.is_file():
            out[LOSSMATCH_CONDITION] = A.read_json(lm)["chosen_prompt"]
        else:
            log("finetune: no align/lossmatch.json yet, so the loss-matched condition is not trained")
    if which in ("main", "all"):
        arms = arm_prompts(study)
        clash = [n for n in arms if n in out]
        if clash:
            raise ValueError(f"intervention arm names clash with condition names: {clash}")
        out.update(arms)
        leaks = leak_conditions(study)
        clash = [n for n in leaks if n in out]
        if clash:
            raise ValueError(f"content-leak condition names clash with condition names: {clash}")
        out.update({n: p.base for n, p in leaks.items()})
    if which in ("variants", "all"):
        clash = [n for n, _ in study.trait.variants if n in out]
        if clash:
            raise ValueError(f"variant names clash with condition names: {clash}")
        out.update(dict(study.trait.variants))
    if which == "steering":
        specs = steering_specs(study)
        clash = [n for n in specs if n in out]
        if clash:
            raise ValueError(f"steering condition names clash with condition names: {clash}")
        out.update({n: study.cfg.align.conditions[NEUTRAL_CONDITION] for n in specs})
    if not out:
        raise ValueError(f"no training conditions for which={which!r} (the trait defines no variants?)")
    return out


def steering_specs(study: Study) -> dict[str, SteerSpec]:
    """The preventative-steering conditions of this study's config, layers checked against its model."""
    return steer_specs(study.cfg.steering, study.tlm.n_layers)


def training_direction(study: Study) -> torch.Tensor:
    """v(l) at the position the align stage reports on: what probes and drift project onto, (L, d)."""
    return load_direction(study)


def check_panel(study: Study) -> None:
    """Refuse a drift panel prompt that is, or mentions the trait like, a training prompt (issue 16: the panel
    measures drift in contexts never trained on). Checks every configured condition, the loss-matched pool's
    chosen prompt and every wording variant, whichever sweep is being planned (preflight has checked all but
    the chosen prompt, which only the run folder knows)."""
    training = set(study.cfg.align.conditions.values()) | {p for _, p in study.trait.variants}
    lm = study.layout.lossmatch
    if lm.is_file():
        training.add(A.read_json(lm)["chosen_prompt"])
    check_panel_prompts(study.cfg.drift.panel, training, study.trait)


def drift_prompts(study: Study) -> list[str]:
    """The first ``finetune.n_drift_prompts`` held-out eval prompts."""
    return [p.text for p in study.splits.eval[: study.cfg.finetune.n_drift_prompts]]


def build_plan(study: Study, which: str, *, for_training: bool = True) -> FinetunePlan:
    """The plan of ``finetune --which <which>``: reads the direction, the SFT set and the conditions once.

    ``for_training=False`` (drift of runs already trained) skips the SFT set, which may need
    the model's own answers to be generated first.
    """
    conditions = training_conditions(study, which)
    check_panel(study)
    specs = steering_specs(study) if which == "steering" else {}
    arms = intervene_specs(study) if which in ("main", "all") else {}
    if study.cfg.intervene.arms and which not in ("main", "all") and for_training:
        log(f"finetune --which {which}: the gradient-intervention arms (intervene.arms: "
            f"{', '.join(study.cfg.intervene.arms)}) are main conditions, not in this plan (--which main or all)")
    leaks = leak_conditions(study)
    _, meta = load_directions(study)
    runs = [RunSpec(c, seed, system, specs.get(c), leaks[c].leak_words if c in leaks else 0,
                    leaks[c].template if c in leaks else DEFAULT_TEMPLATE, arms.get(c))
            for c, system in conditions.items() for seed in study.cfg.finetune.seeds]
    plan = FinetunePlan(which=which, v=training_direction(study).detach().float().cpu(), layer=int(meta["layer"]),
                        sft=ensure_sft(study) if for_training else None, drift_prompts=drift_prompts(study),
                        neutral_prompt=study.cfg.align.conditions[NEUTRAL_CONDITION], runs=runs)
    restore = next((r for r in runs if r.intervene is not None and r.intervene.arm == "restore_v"), None)
    if for_training and restore is not None and study.tlm.device.type != "meta":  # a weight-less planner skips it
        # Before any run trains: a restore_v that cannot be calibrated stops the sweep here, not half-way.
        assert plan.sft is not None and restore.intervene is not None
        restore_record(study, restore.intervene, plan.sft, plan.v, plan.sft_systems(restore), plan.layer)
    return plan
