"""Config errors must name the key; overrides and the TOML round trip must be exact."""

from __future__ import annotations

import tomllib

import pytest

from nnsight_inoc.config import ConfigError, apply_overrides, dump_toml, from_dict, load_config


def test_defaults_and_presets_load():
    for preset in ("allcaps", "smoke"):
        cfg = load_config(preset=preset)
        assert "neutral" in cfg.align.conditions
    assert load_config().model.name == "qwen2.5-coder-1.5b-instruct"


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[model]\nnmae = 'x'\n")
    with pytest.raises(ConfigError, match="unknown key 'model.nmae'"):
        load_config(p)
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        from_dict({"bogus": 1})


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match="data.n_sft"):
        from_dict({"data": {"n_sft": -3}})
    with pytest.raises(ConfigError, match="model.dtype"):
        from_dict({"model": {"dtype": "float8"}})
    with pytest.raises(ConfigError, match="neutral"):
        from_dict({"align": {"conditions": {"inoc": "x"}, "lossmatch_target": "inoc"}})


def test_bad_toml_and_missing_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(preset="nope")


def test_overrides_win_and_none_is_ignored():
    cfg = apply_overrides(load_config(), {"model.name": "smollm2-135m-instruct", "seed": None, "model.device": "cpu"})
    assert cfg.model.name == "smollm2-135m-instruct" and cfg.model.device == "cpu" and cfg.seed == 0
    with pytest.raises(ConfigError, match="unknown key 'model.colour'"):
        apply_overrides(cfg, {"model.colour": "red"})


def test_toml_round_trip():
    cfg = load_config(preset="smoke")
    again = from_dict(tomllib.loads(dump_toml(cfg)))
    assert again == cfg


def test_readme_config_reference_lists_every_key():
    from pathlib import Path

    from pydantic import BaseModel

    from nnsight_inoc.config import StudyConfig

    def keys(model, prefix=""):
        for name, f in model.model_fields.items():
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
                yield from keys(f.annotation, prefix + name + ".")
            else:
                assert f.description, f"{prefix}{name} has no description"
                yield prefix + name

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [k for k in keys(StudyConfig) if f"`{k}`" not in readme]
    assert not missing, f"README config reference lacks {missing}"
