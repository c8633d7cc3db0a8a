"""Config errors must name the key; overrides and the TOML round trip must be exact."""

from __future__ import annotations

import tomllib
from typing import get_args

import pytest

from nnsight_inoc.core.config import (
    PRESETS,
    ConfigError,
    TraitConfig,
    apply_overrides,
    dump_toml,
    from_dict,
    load_config,
)
from nnsight_inoc.data.traits import get_trait, registered_traits
from tests._paths import ROOT


def test_defaults_and_presets_load():
    assert set(PRESETS) >= {"allcaps", "spanish", "politeness", "smoke"}
    for preset in PRESETS:
        cfg = load_config(preset=preset)
        assert "neutral" in cfg.align.conditions
    assert load_config().model.name == "qwen2.5-coder-1.5b-instruct"


@pytest.mark.parametrize("preset", ["allcaps", "spanish", "politeness"])
def test_trait_presets_use_their_traits_prompts(preset):
    cfg = load_config(preset=preset)
    trait = get_trait(cfg.trait.name)
    assert cfg.trait.name == preset
    assert cfg.align.conditions == {"neutral": trait.neutral, "inoc": trait.inoculation[0], "explicit": trait.explicit}
    assert trait.promote in cfg.extract.monitor_prompts and trait.suppress in cfg.extract.monitor_prompts


@pytest.mark.parametrize("preset", ["allcaps", "spanish", "politeness"])
def test_gpu_config_differs_from_its_preset_only_in_batch_sizes(preset):
    gpu = load_config(ROOT / "gpu" / f"{preset}_gpu.toml")
    batch_keys = {"extract": {"batch_size"}, "align": {"batch_size"}, "data": {"generation_batch_size"}}
    a, b = load_config(preset=preset).model_dump(), gpu.model_dump()
    for section, keys in batch_keys.items():
        for k in keys:
            a[section].pop(k), b[section].pop(k)
    assert a == b


def test_trait_names_in_config_and_registry_match():
    accepted = set(get_args(TraitConfig.model_fields["name"].annotation))
    assert accepted == set(registered_traits())
    for name in accepted:
        assert from_dict({"trait": {"name": name}}).trait.name == name
    with pytest.raises(ConfigError, match="trait.name"):
        from_dict({"trait": {"name": "klingon"}})


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

    from pydantic import BaseModel

    from nnsight_inoc.core.config import StudyConfig

    def keys(model, prefix=""):
        for name, f in model.model_fields.items():
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
                yield from keys(f.annotation, prefix + name + ".")
            else:
                assert f.description, f"{prefix}{name} has no description"
                yield prefix + name

    readme = (ROOT / "README.md").read_text()
    missing = [k for k in keys(StudyConfig) if f"`{k}`" not in readme]
    assert not missing, f"README config reference lacks {missing}"


def test_tf32_gpu_config_differs_from_the_fp32_one_only_in_training_precision():
    gpu = ROOT / "gpu"
    a, b = load_config(gpu / "allcaps_gpu.toml").model_dump(), load_config(gpu / "allcaps_tf32_gpu.toml").model_dump()
    assert (a["finetune"].pop("train_autocast"), b["finetune"].pop("train_autocast")) == ("model", "tf32")
    assert a == b


def test_a_bad_value_is_named_once():
    for data, said in (({"intervene": {"layers": [5, 2]}}, "strictly increasing, got [5, 2]"),
                       ({"finetune": {"steps": 0}}, "greater than or equal to 1 (got 0)")):
        with pytest.raises(ConfigError) as err:
            from_dict(data, "test")
        assert said in str(err.value) and str(err.value).count("[5, 2]") <= 1
