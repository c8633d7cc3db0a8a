"""A model's layer count and width from its config alone, before any weights load.

Why: a config that cannot fit the model (``steering.layer_sets = [[99]]`` on a 28-layer model)
was caught only after about 27 s of loading weights. Everything that can be checked against the
model's own config is checked here first (:func:`check_fits`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nnsight_inoc.core.config import ConfigError, StudyConfig
from nnsight_inoc.models.cache import PRESETS, models_dir
from nnsight_inoc.models.gguf_check import check_gguf


@dataclass(frozen=True)
class ModelShape:
    n_layers: int  # decoder layers
    d_model: int  # residual stream width
    source: str  # where the numbers were read: a config.json, a GGUF header, the preset table
    max_positions: int | None = None  # longest sequence the position embeddings cover (None: not known)


def read_shape(spec: str, home: Path | None = None) -> ModelShape | None:
    """The shape of the model ``spec`` names, read without weights; None when it cannot be read offline.

    Presets: the cached config.json, else the preset table. Local folders: config.json. Local
    .gguf files: the header (which also checks the file is whole, naming it when it is not).
    Hub ids: None (their config needs the network; the check then runs after loading).
    """
    if spec in PRESETS:
        folder = models_dir(home) / spec
        if (folder / "config.json").is_file():
            return _from_config_json(folder / "config.json")
        p = PRESETS[spec]
        return ModelShape(p.n_layers, p.d_model, f"the preset table ({p.arch})") if p.n_layers and p.d_model else None
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return _from_config_json(path / "config.json")
    if path.is_file() and path.suffix.lower() == ".gguf":
        info = check_gguf(path)
        if info.n_layers and info.d_model:
            return ModelShape(info.n_layers, info.d_model, f"the GGUF header of {path}", info.context)
    return None


def local_folder(spec: str, home: Path | None = None) -> Path | None:
    """The Hugging Face folder ``spec`` loads from when it is already on this machine (a local folder, a
    cached preset), else None (a hub id, a preset not fetched yet, a .gguf not converted yet)."""
    folder = models_dir(home) / spec if spec in PRESETS else Path(spec).expanduser()
    return folder if folder.is_dir() and (folder / "config.json").is_file() else None


def _from_config_json(path: Path) -> ModelShape | None:
    cfg = json.loads(path.read_text())
    cfg = cfg.get("text_config", cfg)  # multimodal configs nest the language model's
    layers = next((cfg[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if k in cfg), None)
    width = next((cfg[k] for k in ("hidden_size", "n_embd", "d_model") if k in cfg), None)
    positions = next((cfg[k] for k in ("max_position_embeddings", "n_positions") if k in cfg), None)
    if not (layers and width):
        return None
    return ModelShape(int(layers), int(width), str(path), int(positions) if positions else None)


def check_fits(cfg: StudyConfig, shape: ModelShape) -> None:
    """Refuse config values the model cannot have: steering or intervention layers beyond its last layer, and answer lengths
    beyond the positions it has (``data.sft_max_new_tokens``, ``extract.max_new_tokens``).

    Raises ConfigError (a usage error) naming the key, the bad value and the allowed range.
    """
    bad = sorted({layer for ls in cfg.steering.layer_sets for layer in ls if layer >= shape.n_layers})
    if bad:
        raise ConfigError(
            f"steering.layer_sets = {cfg.steering.layer_sets}: layer(s) {bad} out of range for {cfg.model.name!r}, "
            f"which has {shape.n_layers} layers (0 to {shape.n_layers - 1}; read from {shape.source})")
    bad = [layer for layer in cfg.intervene.layers if layer >= shape.n_layers]
    if bad:
        raise ConfigError(
            f"intervene.layers = {cfg.intervene.layers}: layer(s) {bad} out of range for {cfg.model.name!r}, "
            f"which has {shape.n_layers} layers (0 to {shape.n_layers - 1}; read from {shape.source})")
    if shape.max_positions:
        for key, n in (("data.sft_max_new_tokens", cfg.data.sft_max_new_tokens),
                       ("extract.max_new_tokens", cfg.extract.max_new_tokens)):
            if n >= shape.max_positions:
                raise ConfigError(f"{key} = {n}: {cfg.model.name!r} has {shape.max_positions} positions (read from "
                                  f"{shape.source}), so answers must be shorter, with room for the prompt")
