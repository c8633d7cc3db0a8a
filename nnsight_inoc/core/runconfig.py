"""A command's config, resolved against the run folder it works on and checked before anything is written.

The run folder's own ``config.toml`` is the default config of every later command on it (the
CLI's and :func:`nnsight_inoc.study.open_study`'s): a user who forgets ``--config`` or
``--preset`` gets the study the folder holds, never the default study written over it. What
the command asks for (a preset, a config file's keys, flags; later ones win) goes on top, and
:func:`check_against_folder` decides for every key that would change whether it may:

- the runtime keys (:data:`RUNTIME_KEYS`: where the work runs, not what it computes) always may;
- ``steering.*`` and ``intervene.arms`` always may: every steering or intervention run records it in its
  ``train.json`` and a finished run trained with another is refused, so extending the sweep is safe
  (``intervene.layers`` and ``intervene.rand_seed`` change what finished arms computed, so they follow the next rule);
- any other key may change only while no result made from it exists in the folder (for example
  ``finetune.*`` before the first LoRA run: a derived study over a copy of extract and align).
  Otherwise :class:`ConfigConflict` names the key, both values, what asked for the new one and
  the result made with the old one. Nothing in the folder is touched.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnsight_inoc.core.config import (
    SECTIONS,
    ConfigError,
    StudyConfig,
    from_dict,
    merge,
    merge_dicts,
    preset_config,
    read_toml,
)
from nnsight_inoc.core.layout import RunLayout, default_run_dir

RUNTIME_KEYS = ("model.device", "backend.kind", "backend.host", "backend.port", "backend.tls", "backend.api_key_env")
ALWAYS_CHANGEABLE_PREFIXES = ("steering.", "intervene.arms", "execution.")  # execution: how runs execute, never what they compute
# The stage whose results a key first shapes; the results of that stage and of every later one depend on it.
STAGE_ORDER = ("data", "extract", "align", "finetune")
# (Runtime keys and steering.* have owners too, but may always change: see may_always_change.)
_OWNER = (("data.", "data"), ("seed", "extract"), ("model.", "extract"), ("trait.", "extract"),
          ("backend.", "extract"), ("extract.", "extract"), ("align.", "align"), ("leak.", "align"),
          ("finetune.", "finetune"), ("steering.", "finetune"), ("intervene.", "finetune"),
          ("execution.", "finetune"),
          ("transfer.", "transfer"), ("drift.", "drift"))
# Stages off the chain: their results depend on their own keys (and the chain's), nothing depends on theirs.
SIDE_STAGES = ("transfer", "drift")


class ConfigConflict(ConfigError):
    """The command asks for a config value that conflicts with results already in the run folder."""


@dataclass(frozen=True)
class Resolved:
    """A command's config and run folder, and where every value came from."""

    cfg: StudyConfig
    run_dir: Path
    has_folder_config: bool  # the run folder has a config.toml, which is then the base of cfg
    origins: dict[str, str] = field(default_factory=dict)  # dotted key -> what asked for it ("preset smoke", "--model")
    sources: dict[str, Any] = field(default_factory=dict)  # for provenance: preset, config file, flags, folder config


def leaves(data: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys of a config dict (a model_dump or a TOML file's tables); dict-valued keys stay whole."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def folder_data(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's config.toml as written (not validated), or None for a folder without one."""
    path = RunLayout(run_dir).config
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}, the run folder's config, is not valid TOML: {err}") from None


def folder_config(run_dir: Path) -> StudyConfig | None:
    """The config a run folder was made with (its config.toml), or None for a folder without one."""
    data = folder_data(run_dir)
    return None if data is None else from_dict(data, source=f"{RunLayout(run_dir).config}, the run folder's config")


def folder_values(run_dir: Path) -> dict[str, Any] | None:
    """Dotted key -> value of a run folder's config (defaults for keys an older config.toml lacks), unvalidated,
    so that a folder written by an older version can still be compared and corrected by a flag."""
    data = folder_data(run_dir)
    return None if data is None else leaves(StudyConfig().model_dump()) | leaves(data)


def resolve_config(
    run_dir: str | Path | None,
    preset: str | None = None,
    config_path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    flag_names: Mapping[str, str] | None = None,
    *,
    use_folder: bool = True,
) -> Resolved:
    """defaults, or the run folder's config.toml when it has one < preset < config file keys < flags.

    ``flags`` maps dotted keys to values (None = not given); ``flag_names`` names them for messages
    (``{"model.name": "--model"}``). Without ``run_dir`` the folder is ``artifacts/<trait>_<model>``
    of the requested config. ``use_folder=False`` ignores any folder (commands that do not work on
    one, such as ``bench``). Nothing is written; ConfigError names the bad key and its source.
    """
    requested: dict[str, Any] = {}
    origins: dict[str, str] = {}
    file_base = StudyConfig()
    if preset is not None:
        file_base = preset_config(preset)
        for k, v in leaves(file_base.model_dump()).items():
            requested[k], origins[k] = v, f"preset {preset}"
    file_info = None
    if config_path is not None:
        p = Path(config_path)
        data = read_toml(p)
        merge(file_base, data, source=str(p))  # validate the file where its keys are named after it
        for k, v in leaves(data).items():
            requested[k], origins[k] = v, f"--config {p}"
        file_info = {"path": str(p.resolve()), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    for k, v in given.items():
        requested[k], origins[k] = v, (flag_names or {}).get(k, k)
    wanted = from_dict(merge_dicts(StudyConfig().model_dump(), nest(requested)), source=_source(origins)) \
        if run_dir is None else None
    folder_dir = Path(run_dir) if wanted is None else default_run_dir(wanted.trait.name, wanted.model.name)
    raw = folder_data(folder_dir) if use_folder else None
    if raw is None:
        cfg = wanted or from_dict(merge_dicts(StudyConfig().model_dump(), nest(requested)), source=_source(origins))
    else:  # the folder's values, unvalidated, under the requested ones: a flag can correct an old key
        base = merge_dicts(StudyConfig().model_dump(), raw)
        where = f"{RunLayout(folder_dir).config}, the run folder's config"
        where = f"{_source(origins)} over {where}" if origins else where
        cfg = from_dict(merge_dicts(base, nest(requested)), source=where)
    sources = {"run_folder_config": str(RunLayout(folder_dir).config) if raw is not None else None,
               "preset": preset, "config_file": file_info, "flags": given}
    return Resolved(cfg, folder_dir, raw is not None, origins, sources)


def run_config(
    run_dir: str | Path,
    config_path: str | Path | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> StudyConfig:
    """The config a command on ``run_dir`` uses: the folder's config.toml (defaults for a new folder) < preset <
    the config file's keys < dotted ``overrides``. What experiments pass to ``open_study``."""
    return resolve_config(run_dir, preset, config_path, overrides).cfg


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys back into a config dict (``{"model.name": x}`` -> ``{"model": {"name": x}}``)."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.partition(".")
        if key:
            out.setdefault(section, {})[key] = value
        else:
            out[dotted] = value
    return out


def _source(origins: Mapping[str, str]) -> str:
    named = list(dict.fromkeys(origins.values()))
    return ", ".join(named[:3]) + (" ..." if len(named) > 3 else "") if named else "defaults"


def may_always_change(key: str) -> bool:
    """Runtime keys and the steering sweep: no result in a run folder is invalidated by changing them."""
    return key in RUNTIME_KEYS or key.startswith(ALWAYS_CHANGEABLE_PREFIXES)


def owner_stage(key: str) -> str:
    """The first stage whose results depend on ``key``."""
    for prefix, stage in _OWNER:
        if key == prefix or key.startswith(prefix):
            return stage
    raise ConfigError(f"no stage owns config key {key!r}")  # a new section must be added to _OWNER


def stage_results(layout: RunLayout, stage: str) -> list[Path]:
    """The files of one stage that exist in the run folder."""
    files = {
        "data": lambda: [layout.splits],
        "extract": lambda: [layout.directions, layout.extract_summary],
        "align": lambda: [layout.align_summary, layout.lossmatch, layout.sft_completions, *layout.align_conditions()],
        "finetune": lambda: layout.trained_runs(),
        "transfer": lambda: [layout.transfer_json],
        "drift": lambda: sorted(layout.finetune_dir.glob("*/drift.json")),
    }[stage]()
    return [f for f in files if f.is_file()]


def results_made_from(layout: RunLayout, key: str) -> list[Path]:
    """Existing results that depend on ``key``: its owner stage's and every later stage's."""
    owner = owner_stage(key)
    if owner in SIDE_STAGES:
        return stage_results(layout, owner)
    start = STAGE_ORDER.index(owner)
    return [f for stage in (*STAGE_ORDER[start:], *SIDE_STAGES) for f in stage_results(layout, stage)]


def config_changes(cfg: StudyConfig, folder: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (folder's value, cfg's value) for every key that differs (``folder``: :func:`folder_values`)."""
    return {k: (folder.get(k), v) for k, v in leaves(cfg.model_dump()).items() if folder.get(k) != v}


def check_against_folder(
    cfg: StudyConfig,
    run_dir: Path,
    origins: Mapping[str, str] | None = None,
    variant: Collection[str] = (),
) -> dict[str, tuple[Any, Any]]:
    """The changes ``cfg`` makes to the run folder's config, after refusing the ones it may not make.

    ``variant`` lists keys an experiment deliberately measures another value of (never written
    back into config.toml; see ``open_study``). Returns {} for a folder without config.toml.
    Raises :class:`ConfigConflict`, one line naming the refused keys (the first three, and how
    many more).
    """
    folder = folder_values(run_dir)
    if folder is None:
        return {}
    layout = RunLayout(run_dir)
    changes = config_changes(cfg, folder)
    bad = []
    for key, (old, new) in changes.items():
        if key in variant or may_always_change(key):
            continue
        made = results_made_from(layout, key)
        if made:
            origin = (origins or {}).get(key, "this command's config")
            bad.append(f"{key} = {_short(new)} (from {origin}) but the folder's config.toml has {_short(old)}, "
                       f"and {made[0].relative_to(layout.root)} was made with it")
    if bad:
        more = f"; and {len(bad) - 3} more keys" if len(bad) > 3 else ""
        raise ConfigConflict(f"run folder {run_dir}: " + "; ".join(bad[:3]) + more + ". Leave the option out to use "
                             "the folder's own config, or give another --run-dir for a different study")
    return changes


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
