"""Grouped LoRA runs to and from PEFT adapter folders.

A saved run is an ordinary PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``
with PEFT 0.21's key names ``base_model.model.<module>.lora_{A,B}.weight`` and metadata
``{"format": "pt"}``, as ``PeftModel.save_pretrained`` writes them), so every existing stage
loads it with ``PeftModel.from_pretrained``. Loading K finished runs back into one
:class:`GroupedLora` lets probes and drift generation of a group share one pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from nnsight_inoc.core.artifacts import folder_written_atomically
from nnsight_inoc.train.grouped import GroupedLora, matching_modules

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_PREFIX = "base_model.model."  # PeftModelForCausalLM -> LoraModel -> the causal LM

# Config fields whose non-default values change what an adapter computes; grouped LoRA
# implements only the defaults, so a folder using any other value is refused on load.
_PLAIN = {"peft_type": "LORA", "bias": "none", "use_rslora": False, "use_dora": False, "fan_in_fan_out": False,
          "lora_bias": False, "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None,
          "layers_to_transform": None, "layer_replication": None, "target_parameters": None,
          "trainable_token_indices": None, "exclude_modules": None, "use_qalora": False, "use_bdlora": None,
          "alora_invocation_tokens": None, "arrow_config": None, "velora_config": None,
          "monteclora_config": None, "kasa_config": None}


def key(module: str, which: str) -> str:
    """PEFT's saved key of a LoRA weight: ``which`` is "A" or "B"."""
    return f"{_PREFIX}{module}.lora_{which}.weight"


def peft_config(grouped: GroupedLora, base_model_name_or_path: str | None) -> LoraConfig:
    """The ``LoraConfig`` that ``get_peft_model`` + ``save_pretrained`` would record for these runs."""
    return LoraConfig(
        r=grouped.r, lora_alpha=grouped.alpha, lora_dropout=grouped.dropout,
        target_modules=list(grouped.target_modules), task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path, inference_mode=True,
    )


def save_peft(grouped: GroupedLora, k: int, folder: Path | str, base_model_name_or_path: str | None) -> Path:
    """Write run k as a PEFT adapter folder; returns ``folder``.

    Atomic: written into a temp folder beside ``folder`` and renamed over it (an existing
    ``folder`` is replaced), so a crash never leaves half an adapter. Weights are fp32 CPU
    copies of slot k: lora_A (r, in), lora_B (out, r).
    """
    target = Path(folder)
    weights = {}
    for name, (a, b) in grouped.slot(k).items():
        weights[key(name, "A")] = a.float().cpu().contiguous()
        weights[key(name, "B")] = b.float().cpu().contiguous()
    with folder_written_atomically(target) as tmp:
        peft_config(grouped, base_model_name_or_path).save_pretrained(str(tmp))
        save_file(weights, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    return target


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}")
    cfg = json.loads(path.read_text())
    for field, plain in _PLAIN.items():
        if cfg.get(field, plain) != plain:
            raise ValueError(f"{folder}: {field}={cfg[field]!r} is not supported by grouped LoRA (needs {plain!r})")
    if cfg.get("init_lora_weights", True) not in (True, False):
        # Inits such as pissa or olora rewrite the base weights, so the adapter needs a different base.
        raise ValueError(f"{folder}: init_lora_weights={cfg['init_lora_weights']!r} is not supported")
    return cfg


def load_peft(folders: Sequence[Path | str], model: nn.Module, requires_grad: bool = False) -> GroupedLora:
    """K saved PEFT LoRA adapters (run k = ``folders[k]``) as one GroupedLora on ``model``'s devices.

    ``model`` is the causal LM the adapters were trained on (their module names must be its
    target modules, all of them). Every folder must share r, lora_alpha and target_modules and
    hold exactly the expected keys and shapes; anything else raises ValueError naming the
    folder. Weights come back as fp32; frozen unless ``requires_grad`` (gradients w.r.t. the
    residual stream still flow through the hooks).
    """
    if not folders:
        raise ValueError("no adapter folders given")
    paths = [Path(f) for f in folders]
    cfgs = [_read_config(p) for p in paths]
    first = cfgs[0]
    for p, c in zip(paths[1:], cfgs[1:]):
        for f in ("r", "lora_alpha", "lora_dropout"):
            if c[f] != first[f]:
                raise ValueError(f"{p}: {f}={c[f]} differs from {paths[0]}'s {first[f]}")
        if sorted(c["target_modules"]) != sorted(first["target_modules"]):
            raise ValueError(f"{p}: target_modules {c['target_modules']} differ from {first['target_modules']}")
    r = int(first["r"])
    mods = matching_modules(model, list(first["target_modules"]))
    per_run: list[dict[str, torch.Tensor]] = []
    for p in paths:
        with safe_open(str(p / WEIGHTS_NAME), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
        want = {key(n, w) for n, _ in mods for w in "AB"}
        if set(tensors) != want:
            extra, lacking = sorted(set(tensors) - want), sorted(want - set(tensors))
            raise ValueError(f"{p}: adapter keys do not match the model's target modules "
                             f"(unexpected {extra[:2]}, missing {lacking[:2]})")
        per_run.append(tensors)
    As, Bs = [], []
    for name, mod in mods:
        dev = mod.weight.device
        a = torch.stack([t[key(name, "A")] for t in per_run]).to(dev, torch.float32)
        b = torch.stack([t[key(name, "B")] for t in per_run]).to(dev, torch.float32)
        if a.shape[1:] != (r, mod.in_features) or b.shape[1:] != (mod.out_features, r):
            raise ValueError(f"{name}: saved shapes A {tuple(a.shape[1:])}, B {tuple(b.shape[1:])} do not fit "
                             f"r={r} and Linear({mod.in_features}, {mod.out_features})")
        As.append(nn.Parameter(a, requires_grad=requires_grad))
        Bs.append(nn.Parameter(b, requires_grad=requires_grad))
    return GroupedLora([n for n, _ in mods], As, Bs, r=r, alpha=first["lora_alpha"],
                       target_modules=list(first["target_modules"]), dropout=float(first["lora_dropout"]))
