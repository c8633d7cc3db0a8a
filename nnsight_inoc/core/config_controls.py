"""Config sections of the controls added by issue 16: the content leak, the drift panel, cross-context transfer.

All three are off by default, so a config written before them (every published ``config.toml``)
still describes exactly the study it ran; the shipped presets turn them on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from nnsight_inoc.core.section import _Section


class LeakConfig(_Section):
    """The content-leak control (issue 16; nnsight_inoc/measures/leak.py, stages/leak.py)."""

    targets: list[str] = Field(
        default_factory=list,
        description="Conditions whose mean SFT-loss reduction (vs neutral) the leak dial is set to match; "
        "'strongest_variant' = the trait's wording variant that lowers the loss most. Empty (the default, as "
        "published before issue 16) = no leak control; the shipped presets name ['inoc', 'strongest_variant'].",
    )
    families: dict[str, str] = Field(
        default_factory=lambda: {"leak": "neutral", "inoc_leak": "inoc"},
        description="The factorial: each family quotes the leak after its base condition's prompt (trait "
        "explanation none / the inoculation prompt), at every dial level: <family>_<target> at the level matched "
        "to a target (leak_inoc = the loss-matched control of inoc), <family>_w<k> at an extra level.",
    )
    template: str = Field('The answer begins: "{words}"',
                          description="How the leak follows the base prompt; {words} = the answer's first k words.")
    words: list[int] = Field(default_factory=list,
                             description="Fixed dial levels (words) instead of the search; empty = search.")
    max_words: int = Field(64, ge=1, description="Largest dial level the search tries.")
    extra_words: list[int] = Field(default_factory=list, description="Dial levels crossed in the factorial besides "
                                   "the matched ones (e.g. a strong leak, to spread loss reduction apart from "
                                   "alignment); each passes the same trait-free check.")
    tolerance: float = Field(0.1, gt=0, lt=1, description="A dial matches when its mean loss reduction is within this "
                             "share of the target's reduction (the target's gap to neutral).")
    match_examples: Literal["lossmatch_examples", "all"] = Field(
        "lossmatch_examples",
        description="The SFT examples the dial is matched on: 'lossmatch_examples' = the first "
        "align.lossmatch_examples (200), as published for ALL-CAPS; 'all' = the whole SFT set, the examples C2's "
        "loss-match cap reads (issue 23: ALL-CAPS's dial matched within 1% on its 200 examples but left 46% of "
        "the loss gap over all 993). Costs one forward pass over every example per dial level tried.",
    )

    @field_validator("template")
    @classmethod
    def _has_words(cls, v: str) -> str:
        if "{words}" not in v:
            raise ValueError("must contain {words}")
        return v


class DriftConfig(_Section):
    """Drift under a panel of test prompts (issue 16): with a panel, the main drift measure is the panel mean."""

    panel: list[str] = Field(
        default_factory=list,
        description="Trait-free test system prompts never used in training (checked before the model loads, when the plan "
        "is built and against the base model's answers); the neutral prompt is measured and reported on its own besides. "
        "Empty (the default, as published before issue 16) = neutral only; the shipped presets list five.",
    )
    panel_prompts: int = Field(50, ge=1, description="Held-out eval prompts answered under each panel prompt.")
    panel_max_new_tokens: int = Field(32, ge=1, description="Greedy answer length under the panel prompts.")


class TransferConfig(_Section):
    """Cross-context transfer (issue 16, item 8; nnsight_inoc/probes/transfer.py, stages/transfer.py)."""

    enabled: bool = Field(False, description="Run the transfer stage (before finetune). Off by default, as "
                          "published before issue 16; the shipped presets turn it on.")
    n_examples: int = Field(64, ge=1, description="SFT examples whose training-loss gradient is taken per prompt.")
    n_prompts: int = Field(32, ge=1, description="Held-out eval prompts for the trait log-odds gradient.")
    batch_size: int = Field(8, ge=1, description="Examples per row block in one traced forward/backward.")
    group_size: int = Field(8, ge=1, description="Training prompts whose gradients one pass takes together "
                            "(grouped LoRA slots; memory grows with group_size x batch_size rows).")
    residual_modules: list[str] = Field(
        default_factory=lambda: ["o_proj", "down_proj"],
        description="LoRA target modules that write into the residual stream (their gradient is the "
        "'residual' part; the other target modules are the 'rest').",
    )
