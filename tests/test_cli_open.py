"""Run folders and published results survive mistakes (issue 18 A): the folder's config.toml is the default of
every later command (experiments too), a conflicting option is refused naming the key before anything is
written, results/ is written only with --publish, and one command works in a folder at a time."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from click.testing import CliRunner, Result

from nnsight_inoc.cli import bench, compare, main
from nnsight_inoc.core import artifacts as A
from tests._paths import ROOT
from tests._runs import snapshot, tiny_run


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def no_download(monkeypatch):
    """A command that reached for the default study's model would try to download it: fail fast instead."""
    def refuse(requirements, dest):
        raise AssertionError(f"tried to download {requirements}")
    monkeypatch.setattr("nnsight_inoc.models.cache.pip_downloader", refuse)


def test_data_build_without_its_preset_keeps_the_folders_config(tmp_path, no_download):
    """The issue's case: `data build --run-dir <a study>` with the config forgotten used to write the default study's
    config.toml over the folder's, then fail with 'different data config'."""
    _, run = tiny_run(tmp_path)
    before = (run / "config.toml").read_bytes()
    res = cli("data", "build", "--run-dir", run)
    assert res.exit_code == 0, res.output
    assert (run / "config.toml").read_bytes() == before


def test_a_conflicting_option_is_refused_and_nothing_is_written(tmp_path, no_download):
    _, run = tiny_run(tmp_path)
    snap = snapshot(run)
    for args in (["--preset", "smoke"], ["--seed", "3"], ["--dtype", "bfloat16"]):
        res = cli("extract", "--run-dir", run, *args)
        assert res.exit_code == 2, res.output
        assert "ConfigConflict" in res.stderr and "another --run-dir" in res.stderr
        assert snapshot(run) == snap
    res = cli("extract", "--run-dir", run, "--seed", "3")
    assert "seed = 3 (from --seed) but the folder's config.toml has 0" in res.stderr


def test_a_stage_may_change_its_own_keys_until_it_has_results(tmp_path):
    """finetune.* may change while no LoRA run exists (a derived study over a copy of extract and align); the change
    is recorded; once a run is trained it is refused."""
    _, run = tiny_run(tmp_path)
    lr = tmp_path / "lr.toml"
    lr.write_text("[finetune]\nlr = 0.5\n")
    assert cli("data", "build", "--run-dir", run, "--config", lr).exit_code == 0
    assert "lr = 0.5" in (run / "config.toml").read_text()
    inv = json.loads((run / "provenance.json").read_text())["invocations"][-1]
    assert inv["config_changes"] == {"finetune.lr": [0.0001, 0.5]}
    A.write_json(run / "finetune" / "neutral_seed0" / "train.json", {})
    lr.write_text("[finetune]\nlr = 0.7\n")
    res = cli("data", "build", "--run-dir", run, "--config", lr)
    assert res.exit_code == 2 and "finetune.lr = 0.7" in res.stderr and "neutral_seed0/train.json" in res.stderr


def test_the_template_experiment_uses_the_folders_config(tmp_path, no_download):
    """experiments/projection_by_system_prompt.py without --config used to open the default study, writing its
    config over the folder's; it now measures the folder's own study and leaves its config alone."""
    _, run = tiny_run(tmp_path)
    before = (run / "config.toml").read_bytes()
    spec = importlib.util.spec_from_file_location("proj", ROOT / "experiments" / "projection_by_system_prompt.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = CliRunner().invoke(mod.main, ["--run-dir", str(run), "--system", "Hi.", "--n", "2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert (run / "config.toml").read_bytes() == before
    assert json.loads((run / "experiments" / "projection_by_system_prompt.json").read_text())["n"] == 2
    other = tmp_path / "other.toml"
    other.write_text("seed = 5\n")
    res = CliRunner().invoke(mod.main, ["--run-dir", str(run), "--config", str(other), "--system", "Hi."])
    assert res.exit_code != 0 and "seed = 5" in str(res.exception)
    assert (run / "config.toml").read_bytes() == before


def test_open_study_refuses_a_conflicting_config_before_writing(tmp_path, no_download):
    from nnsight_inoc.core.config import ConfigError, load_config
    from nnsight_inoc.study import open_study

    _, run = tiny_run(tmp_path)
    snap = snapshot(run)
    with pytest.raises(ConfigError, match="model.name"):
        open_study(load_config(), run, "an experiment that forgot the config")
    assert snapshot(run) == snap


def test_compare_and_bench_write_under_artifacts_unless_told(tmp_path, monkeypatch):
    assert next(p.default for p in compare.params if p.name == "out_dir") == "artifacts/compare"
    assert next(p.default for p in bench.params if p.name == "out_dir") == "artifacts/bench"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    published = [str(ROOT / "results" / s) for s in ("allcaps", "spanish")]
    res = cli("compare", *published)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "artifacts" / "compare" / "cross_trait.md").is_file()
    assert not any((tmp_path / "results").iterdir())
    res = cli("compare", *published, "--out-dir", "results")
    assert res.exit_code == 2 and "add --publish" in res.stderr and not any((tmp_path / "results").iterdir())
    assert cli("compare", *published, "--out-dir", "results", "--publish").exit_code == 0
    assert (tmp_path / "results" / "cross_trait.md").is_file()


def test_study_commands_write_into_results_only_with_publish(tmp_path, monkeypatch):
    _, run = tiny_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    published = tmp_path / "results" / "study"
    shutil.copytree(run, published)
    snap = snapshot(published)
    for args in (["data", "build"], ["report"], ["extract"]):
        res = cli(*args, "--run-dir", "results/study")
        assert res.exit_code == 2 and "--publish" in res.stderr, args
    assert snapshot(published) == snap
    assert cli("data", "build", "--run-dir", "results/study", "--publish").exit_code == 0
    res = cli("report", "--run-dir", str(ROOT / "results" / "allcaps"), "--out-dir", tmp_path / "rep")  # read only
    assert res.exit_code == 0, res.output


def test_a_second_command_on_a_busy_folder_is_refused_naming_the_holder(tmp_path):
    from tests.core.test_lock import hold, stop

    _, run = tiny_run(tmp_path)
    proc = hold(run)
    try:
        snap = snapshot(run)
        res = cli("data", "build", "--run-dir", run)
        assert res.exit_code == 1 and f"is in use by pid {proc.pid}" in res.stderr
        assert snapshot(run) == snap
    finally:
        stop(proc)
    assert cli("data", "build", "--run-dir", run).exit_code == 0  # free again once the holder is gone
