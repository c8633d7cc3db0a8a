"""Which model a run uses, and loading it the same way every time.

A spec is a preset name, a local HF folder, a local .gguf file or a hub id. Whatever the
source, the caller gets a frozen, eval-mode model plus a padded tokenizer that carries a chat
template, and a sha256 that pins exactly which weights produced a result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nnsight_inoc.models.cache import (
    PRESETS,
    Preset,
    Progress,
    cache_local_gguf,
    cache_problem,
    fetch,
    models_dir,
)
from nnsight_inoc.models.errors import ModelError
from nnsight_inoc.models.template import apply_system_role, default_system

_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    hf_model: PreTrainedModel  # eval mode, on device, in dtype, parameters frozen (meta device: structure only)
    tokenizer: PreTrainedTokenizerBase  # pad_token always set
    name: str  # preset name, or the spec
    source: str  # "preset" | "hf_folder" | "gguf_file" | "hub"
    sha256: str | None  # pins the weights behind a result; None for hub ids
    dtype: str
    device: str
    notes: list[str] = field(default_factory=list)
    location: str = ""  # the folder or hub id the weights were loaded from (what a remote server loads)
    system_role: str = "native"  # model.system_role: the template's system turn, or folded into the first user turn
    default_system: str | None = None  # what the template inserts for a chat without a system prompt (recorded)


def list_presets(*, home: Path | None = None, presets: Mapping[str, Preset] | None = None) -> list[dict[str, str]]:
    """Rows for the CLI table, so users can see what a fetch would cost before running it."""
    rows = []
    for p in (PRESETS if presets is None else presets).values():
        folder = models_dir(home) / p.name
        cached = folder.exists() and cache_problem(folder, p.sha256, p.size) is None
        packages = p.requirements
        shown = packages[0] if len(packages) == 1 else f"{packages[0]} .. {packages[-1]} ({len(packages)} wheels)"
        rows.append({
            "name": p.name,
            "packages": shown,
            "gguf_mb": f"{p.size / 2**20:.0f}",
            "sha256": p.sha256[:12],
            "arch": p.arch,
            "cached": "yes" if cached else "no",
            "path": str(folder),
        })  # fmt: skip
    return rows


def resolve_device(device: str) -> str:
    """'auto' picks the GPU when there is one, so the same config runs on laptops and GPU boxes."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    spec: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    home: Path | None = None,
    progress: Progress | None = None,
    weights: bool = True,
    system_role: str = "native",
) -> LoadedModel:
    """Resolve `spec` to a folder (fetching/converting once if needed) and load it.

    ``weights=False`` builds the architecture on the meta device instead (the remote
    backend: the server holds the weights; the client needs the structure, the
    tokenizer and the sha256 that pins them). ``system_role`` is ``model.system_role``
    (:mod:`nnsight_inoc.models.template`): the chat template is checked for a system role
    before the weights load, and a template without one is refused unless it is ``"fold"``.
    """
    if dtype not in _DTYPES:
        raise ModelError(f"unsupported dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    device = resolve_device(device) if weights else "meta"
    how = (dtype, device, system_role)
    if spec in PRESETS:
        folder = fetch(spec, home=home, progress=progress)
        return _load_folder(folder, spec, "preset", PRESETS[spec].sha256, *how)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_path(path, spec, how, home, progress)
    if _looks_like_path(spec):
        raise ModelError(f"model path {spec!r} does not exist (and it is not a preset: {', '.join(PRESETS)})")
    return _load_folder(spec, spec, "hub", None, *how)


def _load_path(path: Path, spec: str, how: tuple[str, str, str], home: Path | None,
               progress: Progress | None) -> LoadedModel:
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a folder without config.json, so not a Hugging Face model folder")
        return _load_folder(path.resolve(), spec, "hf_folder", _safetensors_sha256(path), *how)
    if path.suffix.lower() == ".gguf":
        folder, sha, preset = cache_local_gguf(path, home=home, progress=progress)
        return _load_folder(folder, preset or spec, "gguf_file", sha, *how)
    raise ModelError(f"{path} is neither a model folder (with config.json) nor a .gguf file")


def _looks_like_path(spec: str) -> bool:
    """Hub ids are 'org/name'; anything else path-shaped is a typo'd path, not a hub id."""
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1 or spec.lower().endswith(".gguf")


def _safetensors_sha256(folder: Path) -> str:
    """One hash over all weight files (sorted, names included) so renames/reshards change it too."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder} has no .safetensors weights")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(8 * 1024 * 1024):
                digest.update(chunk)
    return digest.hexdigest()


def _load_folder(
    where: Path | str, name: str, source: str, sha256: str | None, dtype: str, device: str, system_role: str = "native"
) -> LoadedModel:
    """The one loading path for every source, so all runs get identical model state.

    The tokenizer and its chat template are checked before the weights load: a model the study
    cannot format chats for fails in a second, not after the weights.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(where))
    except Exception as e:  # OSError for hub/network, ValueError for bad configs, ...
        raise ModelError(f"could not load the tokenizer of {source} model {name!r} from {where}: {e}") from e
    if not tokenizer.chat_template:
        raise ModelError(f"model {name!r} ({where}) has no chat template; the study formats every prompt with one")
    default = default_system(tokenizer)  # before folding: what the template itself inserts
    notes = apply_system_role(tokenizer, system_role, name)
    try:
        if device == "meta":  # structure only: the weights live on the remote server
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(where)), dtype=getattr(torch, dtype))
        else:
            # use_kernels=False: with the `kernels` package installed, transformers (5.x) defaults to hub kernels,
            # and then every .train()/.eval() that changes the mode re-kernelizes: kernels' _replace_forward pops
            # the instance `forward` of each hub-kernel layer (RMSNorm, SiLU), which is where nnsight keeps its
            # controller, so nnsight warned "`forward` was replaced after nnsight wrapped this module" and those
            # modules lost their interventions (issue 27; no trace here touches them, but the next one might).
            # No hub kernel can be fetched offline (the GPU machines have no network), so the torch forward ran
            # either way: the numbers are unchanged.
            model = AutoModelForCausalLM.from_pretrained(str(where), dtype=getattr(torch, dtype), use_kernels=False)
    except Exception as e:  # OSError for hub/network, ValueError for bad configs, ...
        raise ModelError(f"could not load {source} model {name!r} from {where}: {e}") from e
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"model {name!r} has neither a pad nor an eos token; cannot pad batches")
        tokenizer.pad_token = tokenizer.eos_token
        notes.append(f"tokenizer had no pad token; using eos {tokenizer.eos_token!r} for padding")
    model = (model if device == "meta" else model.to(device)).eval()
    model.requires_grad_(False)
    return LoadedModel(model, tokenizer, name, source, sha256, dtype, device, notes, str(where), system_role, default)
