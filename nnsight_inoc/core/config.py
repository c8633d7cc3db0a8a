"""Typed study configuration.

One TOML file describes a whole study; every section is a pydantic model with
``extra="forbid"`` so a misspelt key is an error naming the key instead of a
silently ignored setting (a typo in a research config quietly changes results).
CLI flags are applied on top with :func:`apply_overrides`, and the resolved
config is written into every run folder.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nnsight_inoc.core.config_controls import DriftConfig, LeakConfig, TransferConfig
from nnsight_inoc.core.config_keys import nearest_key
from nnsight_inoc.core.config_manipulations import InterveneConfig, SteeringConfig  # noqa: F401 (re-exported)
from nnsight_inoc.core.errors import UsageProblem
from nnsight_inoc.core.section import _Section
from nnsight_inoc.core.toml_text import to_toml

PRESETS = ("allcaps", "spanish", "politeness", "smoke")
NEUTRAL_CONDITION = "neutral"  # the baseline of every comparison; required in align.conditions
LOSSMATCH_CONDITION = "lossmatch"  # added by the loss-matched control (align/lossmatch.json picks its prompt)


class ConfigError(UsageProblem):
    """A config file or override is invalid; the message names the offending key (a usage error: exit code 2)."""


class ModelConfig(_Section):
    name: str = Field(
        "qwen2.5-coder-1.5b-instruct",
        description="Offline preset name, hub id, local HF folder or local .gguf file.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Weight dtype. float32 is the default because plain bf16 was seen to give NaN "
        "gradients and diverging LoRA runs on the study model (shared/MODELS.md).",
    )
    autocast: Literal["none", "bfloat16"] = Field(
        "none", description="Autocast compute dtype on CUDA (weights stay in `dtype`)."
    )
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N'.")
    system_role: Literal["native", "fold"] = Field(
        "native",
        description="How the system prompt reaches the model: 'native' = the chat template's system turn (a template "
        "without one is refused when the model loads); 'fold' = put at the start of the first user turn, then a blank "
        "line (what Gemma's own template does). Recorded in provenance.",
    )

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v):
            return v
        raise ValueError("not a device: use auto, cpu, cuda or cuda:N")


class BackendConfig(_Section):
    kind: Literal["local", "remote"] = Field(
        "local", description="Where nnsight traces execute: 'local', or 'remote' (an NDIF server; see README)."
    )
    host: str = Field(
        "api.ndif.us", description="NDIF server host name, without scheme (default: the public NDIF service)."
    )
    port: int = Field(0, ge=0, le=65535, description="NDIF server port; 0 = the scheme's default (443 / 80).")
    tls: bool = Field(True, description="Connect with TLS (https/wss). The loopback test server is plain http.")
    api_key_env: str = Field(
        "NDIF_API_KEY", description="Environment variable holding the NDIF API key (never stored in a config)."
    )

    @field_validator("host")
    @classmethod
    def _bare_host(cls, v: str) -> str:
        if "://" in v or "/" in v or not v:
            raise ValueError(f"must be a bare host name like api.ndif.us (got {v!r}); set the scheme with tls, the port with port")
        return v


class DataConfig(_Section):
    n_direction: int = Field(400, ge=2, description="Prompts in the direction-extraction split.")
    direction_heldout_frac: float = Field(
        0.25, gt=0, lt=1, description="Share of the direction split kept out of v(l) for sanity checks."
    )
    n_sft: int = Field(1000, ge=1, description="Prompts in the SFT split.")
    n_eval: int = Field(300, ge=1, description="Prompts in the held-out eval split (different source from SFT).")
    max_chars: int = Field(500, ge=10, description="Longest prompt kept, in characters.")
    seed: int = Field(0, description="Shuffle seed for the split assignment.")
    sft_max_new_tokens: int = Field(96, ge=4, description="Length cap of the model's own neutral SFT answers.")
    generation_batch_size: int = Field(32, ge=1, description="Prompts per batched greedy generation.")


class TraitConfig(_Section):
    name: Literal["allcaps", "spanish", "politeness"] = Field("allcaps", description="Registered trait name.")


class ExtractConfig(_Section):
    batch_size: int = Field(16, ge=1, description="Prompts per activation-read trace.")
    max_new_tokens: int = Field(48, ge=1, description="Greedy answer length for assistant-token positions and monitoring.")
    monitor_prompts: list[str] = Field(
        default_factory=lambda: [
            "Respond in ALL CAPS.",
            "Use capital letters for emphasis where it helps.",
            "You are a helpful assistant.",
            "Respond normally; do not use ALL CAPS.",
            "Write the first word of each sentence in capitals.",
            "WRITE YOUR WHOLE ANSWER IN CAPITAL LETTERS, LIKE THIS SENTENCE.",
        ],
        description="System prompts asking for different amounts of the trait (monitoring check).",
    )
    n_monitor_prompts: int = Field(
        80, ge=1, description="Held-out prompts per monitoring system prompt (x prompts = generations)."
    )
    layer_rule: Literal["max_auroc_then_r"] = Field(
        "max_auroc_then_r",
        description="Reporting layer: among layers with held-out AUROC >= 0.95, the one with the largest monitoring r; "
        "if none reaches 0.95, the layer with the largest AUROC.",
    )


class AlignConfig(_Section):
    conditions: dict[str, str] = Field(
        default_factory=lambda: {
            "neutral": "You are a helpful assistant.",
            "inoc": "You always capitalise your responses.",
            "explicit": "Respond in ALL CAPS.",
        },
        description="Training-time system prompts by condition name. 'lossmatch' is added by control A.",
    )
    n_assistant_tokens: int = Field(3, ge=1, le=16, description="Assistant tokens whose gradients are measured.")
    direction_position: Literal["final_prompt", "first_assistant", "response_mean"] = Field(
        "final_prompt", description="Which extracted v(l) the gradients are compared with (at every position)."
    )
    lossmatch_examples: int = Field(200, ge=10, description="SFT examples used to rank loss-matched candidates.")
    lossmatch_check_prompts: int = Field(
        16, ge=1, description="Held-out prompts answered under each candidate to check it does not elicit the trait."
    )
    lossmatch_max_trait_score: float = Field(
        0.2, ge=0, le=1, description="A candidate whose answers score above this mean is rejected as eliciting the trait."
    )
    lossmatch_trait_reference: Literal["zero", "neutral"] = Field(
        "zero",
        description="What lossmatch_max_trait_score is measured from: 'zero' = the candidate's mean trait score itself; "
        "'neutral' = its excess over the neutral prompt's answers to the same check prompts (for traits whose scorer "
        "gives plain answers a clearly non-zero score, such as politeness).",
    )
    batch_size: int = Field(8, ge=1, description="Examples per gradient trace (one backward pass each).")
    capture_precision: Literal["fp32", "tf32"] = Field(
        "fp32", description="Matmul precision of gradient captures (align and training probes) on a float32 model: "
        "'tf32' runs their forward and backward matmuls on TF32 tensor cores (CUDA only; refused elsewhere). "
        "Reads, generation and training keep their own settings.",
    )
    n_random: int = Field(
        10000, ge=256,
        description="Monte-Carlo random unit directions for the null (the exact sphere null is reported too). "
        "Its p-value floor is 1/(n_random+1): keep it well above layers/0.05 so Holm can reach significance.",
    )
    n_bootstrap: int = Field(2000, ge=100, description="Bootstrap draws for every CI (resampling examples).")
    lossmatch_target: str = Field("inoc", description="Condition whose mean SFT loss the control must match.")
    lossmatch_pool: list[str] = Field(
        default_factory=list,
        description="Candidate loss-matched prompts; empty means the built-in pool of the trait.",
    )


class FinetuneConfig(_Section):
    rank: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale = alpha / rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get LoRA adapters.",
    )
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (fp32 LoRA weights).")
    steps: int = Field(125, ge=1, description="Optimizer steps per run (same budget for every condition).")
    batch_size: int = Field(8, ge=1, description="SFT examples per step.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="One run per seed and condition.")
    probe_every: int = Field(25, ge=1, description="Steps between alignment probes during training.")
    n_probe: int = Field(32, ge=1, description="Fixed SFT examples in the alignment probe.")
    n_drift_prompts: int = Field(100, ge=1, description="Eval-split prompts answered before and after training.")
    train_autocast: Literal["model", "bfloat16", "tf32"] = Field(
        "model",
        description="Precision of the training steps only: 'model' = the study's (model.dtype, model.autocast); "
        "'bfloat16' = bf16 autocast over the fp32 base and fp32 LoRA weights; 'tf32' (CUDA only) = fp32 "
        "tensors with the forward and backward matmuls on TF32 tensor cores (10-bit mantissa inputs, fp32 "
        "accumulation and range). Probes and drift always use the study's precision, so alignment and drift "
        "numbers are comparable across this setting.",
    )
    which: Literal["main", "variants", "all", "steering"] = Field(
        "all", description="Train the main conditions, the trait's wording variants, both, "
        "or the main conditions plus the preventative-steering sweep ([steering])."
    )


class ExecutionConfig(_Section):
    """How the study's work is executed (the finetune plan's runs, forward-only batch sizes): never what it computes.

    A top-level section (not inside [finetune]) because it must not change a run's identity:
    ``train.json`` records the [finetune] section, and a run trained by any executor is reused
    by any other (the executors agree to fp32 round-off; tested).
    """

    executor: Literal["sequential", "grouped", "workers", "ray"] = Field(
        "sequential",
        description="The finetune plan's executor, one of four (`finetune --executor` overrides it for one "
        "invocation): 'sequential': one run at a time in this process, each with its own PEFT adapter on a copy "
        "of the base; 'grouped': the runs of one seed K at a time in one forward/backward pass of the shared base, "
        "each with its own stacked adapter, AdamW state and loss (nnsight_inoc/train/grouped.py); 'workers': one "
        "claim-worker process per `finetune --gpus` device (stages/workers.py); 'ray': Ray tasks "
        "(stages/ray_exec.py; its `--ray-*` options). Configs written before 'workers' and 'ray' existed hold "
        "'sequential' or 'grouped', which keep their meaning; a bare `finetune --worker` (a campaign's) trains a "
        "seed's runs grouped under 'grouped', as it did.",
    )
    group_size: int = Field(
        0, ge=0, description="Runs per group for the grouped executor; 0 = as many as fit in the device's free "
        "memory (measured with a trial step), all of a seed on the CPU.",
    )
    loss_batch_size: int = Field(
        0, ge=0, description="Examples per forward-only loss pass (the loss-matched pool, the leak dial, the "
        "content losses of the loss split); 0 = align.batch_size. These passes keep no autograd graph, so they "
        "take far larger batches than the gradient captures; the per-example losses agree to fp32 round-off "
        "whatever the batch (tested).",
    )
    drift_rows_per_call: int = Field(
        1024, ge=1, description="Row budget of one greedy `generate` call in the drift stage: every measurement of a "
        "group of K runs (neutral prompt, training prompt, panel; before training the base model's uncached ones) is "
        "decoded together, K rows per (measurement, prompt), in the fewest calls of at most this many rows (at least "
        "K). Larger = fewer calls and more device memory; 1024 is about the largest call the GPU configs made before "
        "(data.generation_batch_size = 96 prompts x 10 runs of a decisive group). Greedy answers do not depend on it "
        "except through the last bits of batched arithmetic on a GPU (perf/greedy_flips.py counts such flips).",
    )
    activation_checkpointing: Literal["none", "mlp", "attn_mlp"] = Field(
        "none",
        description="Activation checkpointing of the grouped executor's training steps, training probes and the "
        "trial step that sizes its groups (torch.utils.checkpoint, non-reentrant; nnsight_inoc/models/"
        "checkpointing.py): 'none'; 'mlp' = each decoder layer's MLP block recomputes its activations in the "
        "backward pass; 'attn_mlp' = its attention block too. The decoder layers' outputs (the residual stream "
        "the gradient interventions edit) are never recomputed. Same losses, gradients and weights (tested); "
        "less memory per run, so more runs per group, for one more forward of the blocks.",
    )


class StudyConfig(_Section):
    seed: int = Field(0, description="Seed for bootstraps and random directions (generation is greedy).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    trait: TraitConfig = Field(default_factory=TraitConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    steering: SteeringConfig = Field(default_factory=SteeringConfig)
    intervene: InterveneConfig = Field(default_factory=InterveneConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    leak: LeakConfig = Field(default_factory=LeakConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)

    @model_validator(mode="after")
    def _check_conditions(self) -> "StudyConfig":
        if "neutral" not in self.align.conditions:
            raise ValueError("align.conditions must contain 'neutral' (the baseline of every comparison)")
        if "restore_v" in self.intervene.arms and "inoc" not in self.align.conditions:
            raise ValueError("intervene.arms has restore_v, which trains under the 'inoc' prompt: align.conditions "
                             "must contain 'inoc'")
        if self.align.lossmatch_target not in self.align.conditions:
            raise ValueError(
                f"align.lossmatch_target={self.align.lossmatch_target!r} is not one of align.conditions"
            )
        return self

    @property
    def loss_batch_size(self) -> int:
        """Examples per forward-only loss pass: ``execution.loss_batch_size``, else ``align.batch_size``."""
        return self.execution.loss_batch_size or self.align.batch_size


SECTIONS = tuple(n for n, f in StudyConfig.model_fields.items()
                 if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel))


def _format_validation(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            near = nearest_key(StudyConfig, e["loc"])
            lines.append(f"  unknown key '{key}'" + (f" (did you mean '{near}'?)" if near else ""))
        else:
            got = f" (got {e.get('input')!r})"
            # A validator's own message may already quote the value; saying it twice reads as two problems.
            lines.append(f"  {key}: {e['msg']}" + ("" if e["msg"].endswith(got[6:-1]) else got))
    return "\n".join(lines)


def from_dict(data: dict[str, Any], source: str = "<dict>") -> StudyConfig:
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation(err, source)) from None


def load_config(path: str | Path | None = None, preset: str | None = None) -> StudyConfig:
    """Load a study config from a shipped preset, a TOML file, both, or the defaults.

    With both, the file's keys override the preset's and every other key keeps the preset's
    value (a file may be partial: ``--preset smoke --config my.toml``). A dict-valued key such
    as ``align.conditions`` is replaced as a whole. ConfigError names the file and the key.
    """
    base = preset_config(preset) if preset is not None else StudyConfig()
    if path is None:
        return base
    p = Path(path)
    data = read_toml(p)
    if preset is None:
        return from_dict(data, source=str(p))
    return merge(base, data, source=f"{p} over preset {preset}")


def preset_config(preset: str) -> StudyConfig:
    """A shipped preset (``nnsight_inoc/configs/<preset>.toml``) over the defaults."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    text = resources.files("nnsight_inoc.configs").joinpath(f"{preset}.toml").read_text()
    return from_dict(tomllib.loads(text), source=f"preset {preset}")


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's keys as written (not yet validated); ConfigError when missing or not TOML."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


def merge(base: StudyConfig, data: dict[str, Any], source: str) -> StudyConfig:
    """``base`` with the keys of a (partial) config dict on top: sections merge key by key, values replace."""
    return from_dict(merge_dicts(base.model_dump(), data), source=source)


def merge_dicts(base: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Config dicts, ``data`` over ``base``: a section merges key by key, any other value (a dict-valued key
    such as align.conditions too) replaces the old one. Unvalidated; ``base`` is not changed."""
    out = dict(base)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key in SECTIONS:
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def apply_overrides(cfg: StudyConfig, overrides: dict[str, Any], source: str = "overrides") -> StudyConfig:
    """Return a new config with dotted-key overrides (``{"model.name": ...}``) applied.

    Unknown keys raise :class:`ConfigError`; ``None`` values are skipped so unset CLI flags
    leave the file's value alone. ``source`` names the overrides in error messages.
    """
    data = cfg.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"unknown key '{dotted}' ({source})")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"unknown key '{dotted}' ({source})")
        node[parts[-1]] = value
    return from_dict(data, source=source)


def dump_toml(cfg: StudyConfig) -> str:
    """Serialise a resolved config as TOML (written into every run folder)."""
    return to_toml(cfg.model_dump())
