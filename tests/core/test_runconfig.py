"""A command's config over its run folder: the folder's config.toml is the default; a key may change only while
no result in the folder was made from it (runtime keys and the steering sweep always may)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import ConfigError, dump_toml, from_dict, load_config
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.core.runconfig import (
    RUNTIME_KEYS,
    ConfigConflict,
    check_against_folder,
    leaves,
    owner_stage,
    resolve_config,
    run_config,
)

SMOKE = load_config(preset="smoke")


def _folder(tmp_path: Path, cfg=SMOKE) -> Path:
    run = tmp_path / "run"
    A.write_text(RunLayout(run).config, dump_toml(cfg))
    return run


def _made(run: Path, *rel: str) -> None:
    for r in rel:
        A.write_json(run / r, {})


def test_the_folders_config_is_the_default(tmp_path):
    run = _folder(tmp_path)
    r = resolve_config(run)  # no preset, no file, no flag: the smoke folder stays a smoke study
    assert r.cfg == SMOKE and r.has_folder_config
    assert r.sources["run_folder_config"] == str(RunLayout(run).config)
    assert run_config(run) == SMOKE
    assert resolve_config(tmp_path / "new").cfg == load_config()  # a new folder: the defaults


def test_preset_then_file_keys_then_flags(tmp_path):
    f = tmp_path / "my.toml"
    f.write_text("seed = 7\n[finetune]\nsteps = 5\n[align.conditions]\nneutral = 'N.'\ninoc = 'I.'\n")
    r = resolve_config(tmp_path / "new", "smoke", f, {"seed": 9, "model.device": None}, {"seed": "--seed"})
    assert r.cfg.model.name == "smollm2-135m-instruct"  # the preset's
    assert r.cfg.finetune.steps == 5 and r.cfg.finetune.batch_size == SMOKE.finetune.batch_size  # file over preset
    assert r.cfg.align.conditions == {"neutral": "N.", "inoc": "I."}  # a dict-valued key is replaced whole
    assert r.cfg.seed == 9 and r.origins["seed"] == "--seed"  # flags over both
    assert r.origins["finetune.steps"] == f"--config {f}" and r.origins["model.name"] == "preset smoke"
    assert r.sources["preset"] == "smoke" and r.sources["config_file"]["path"] == str(f.resolve())
    assert len(r.sources["config_file"]["sha256"]) == 64 and r.sources["flags"] == {"seed": 9}
    assert load_config(f, "smoke") == from_dict({**SMOKE.model_dump(), "seed": 7,
                                                 "finetune": {**SMOKE.finetune.model_dump(), "steps": 5},
                                                 "align": {**SMOKE.align.model_dump(),
                                                           "conditions": {"neutral": "N.", "inoc": "I."}}})


def test_a_bad_key_in_the_file_is_named_with_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[model]\nnmae = 'x'\n")
    with pytest.raises(ConfigError, match=r"(?s)bad.toml.*unknown key 'model.nmae'"):
        resolve_config(tmp_path / "new", "smoke", f)


def test_a_flag_can_correct_an_outdated_folder_key(tmp_path):
    """An older config.toml that no longer validates is named, and a flag for that key fixes it."""
    run = tmp_path / "run"
    RunLayout(run).root.mkdir()
    RunLayout(run).config.write_text(dump_toml(SMOKE).replace('host = "api.ndif.us"', 'host = "https://x.org"'))
    with pytest.raises(ConfigError, match=r"(?s)config.toml, the run folder's config.*backend.host"):
        resolve_config(run)
    assert resolve_config(run, flags={"backend.host": "x.org"}).cfg.backend.host == "x.org"


def test_conflict_names_key_values_origin_and_the_result(tmp_path):
    run = _folder(tmp_path)
    _made(run, "data/splits.json")
    want = resolve_config(run, "allcaps").cfg
    with pytest.raises(ConfigConflict) as err:
        check_against_folder(want, run, {"model.name": "preset allcaps"})
    msg = str(err.value)
    assert "\n" not in msg and "data.n_direction = 400" in msg and "has 24" in msg and "data/splits.json" in msg
    assert "another --run-dir" in msg and "more keys" in msg  # the first three keys, then a count


@pytest.mark.parametrize("key,value,stage_file", [
    ("data.n_sft", 5, "data/splits.json"),
    ("model.dtype", "bfloat16", "extract/directions.pt"),
    ("seed", 3, "extract/extract_summary.json"),
    ("align.n_bootstrap", 300, "align/align_summary.json"),
    ("finetune.lr", 0.5, "finetune/neutral_seed0/train.json"),
])
def test_a_key_may_change_only_until_a_result_is_made_from_it(tmp_path, key, value, stage_file):
    run = _folder(tmp_path)
    changed = resolve_config(run, flags={key: value}).cfg
    assert check_against_folder(changed, run) == {key: (leaves(SMOKE.model_dump())[key], value)}  # nothing made yet
    _made(run, stage_file)
    with pytest.raises(ConfigConflict, match=key.replace(".", r"\.")):
        check_against_folder(changed, run)


def test_a_later_stages_result_protects_an_earlier_key(tmp_path):
    """Trained runs depend on the data too: data.* may not change under finetune/."""
    run = _folder(tmp_path)
    _made(run, "finetune/neutral_seed0/train.json")
    with pytest.raises(ConfigConflict, match=r"data\.n_sft.*train\.json"):
        check_against_folder(resolve_config(run, flags={"data.n_sft": 5}).cfg, run)


def test_runtime_keys_steering_and_variants_may_always_change(tmp_path):
    run = _folder(tmp_path)
    _made(run, "data/splits.json", "extract/directions.pt", "align/align_summary.json",
          "finetune/neutral_seed0/train.json")
    flags = {"model.device": "auto", "backend.kind": "remote", "backend.host": "127.0.0.1", "backend.port": 8001,
             "backend.tls": False, "backend.api_key_env": "K", "steering.alphas": [0.3]}
    assert set(flags) - {"steering.alphas"} == set(RUNTIME_KEYS)
    assert set(check_against_folder(resolve_config(run, flags=flags).cfg, run)) == set(flags)
    autocast = resolve_config(run, flags={"model.autocast": "bfloat16"}).cfg
    with pytest.raises(ConfigConflict):
        check_against_folder(autocast, run)
    assert check_against_folder(autocast, run, variant=("model.autocast",)) == {"model.autocast": ("none", "bfloat16")}


def test_every_config_key_has_an_owner_stage():
    for key in leaves(SMOKE.model_dump()):
        assert owner_stage(key) in ("data", "extract", "align", "finetune", "transfer", "drift")


def test_side_stage_keys_are_refused_only_when_their_own_results_exist(tmp_path):
    """drift.* and transfer.* shape only drift.json and transfer.json: align results do not pin them."""
    from nnsight_inoc.core.layout import RunLayout
    from nnsight_inoc.core.runconfig import results_made_from

    layout = RunLayout(tmp_path)
    layout.align_summary.parent.mkdir(parents=True)
    layout.align_summary.write_text("{}")
    assert results_made_from(layout, "drift.panel") == [] and results_made_from(layout, "transfer.n_prompts") == []
    assert results_made_from(layout, "leak.targets") == [layout.align_summary]
    layout.transfer_json.parent.mkdir(parents=True)
    layout.transfer_json.write_text("{}")
    assert results_made_from(layout, "transfer.n_prompts") == [layout.transfer_json]
    assert layout.transfer_json in results_made_from(layout, "align.batch_size")
