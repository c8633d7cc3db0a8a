"""Usage errors are one line and exit code 2, found before expensive work (issue 18 B); other failures are one line
and exit code 1; ``--debug`` shows the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nnsight_inoc.cli import main
from tests._cli import cli, error_line
from tests._runs import snapshot, tiny_run, tiny_splits
from tests.models.test_cache import write_tiny_gguf

# Helpers that need this branch's modules are imported inside the tests that use them, so that every test of
# this file also runs (and fails one by one) against the code before the fix.





@pytest.fixture
def run(tmp_path) -> Path:
    return tiny_run(tmp_path)[1]


@pytest.mark.parametrize("command", [["extract"], ["data", "build"], ["align", "--condition", "all"]])
def test_cuda_without_cuda(tmp_path, monkeypatch, no_weights, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, _ = tiny_run(tmp_path, directions=False)
    res = cli(*command, "--model", model, "--device", "cuda", "--run-dir", tmp_path / "new")
    assert res.exit_code == 2
    assert "model.device = 'cuda', but this machine has no CUDA device" in error_line(res)
    assert not (tmp_path / "new").exists()  # nothing was written


def test_not_a_device(tmp_path, no_weights):
    res = cli("extract", "--device", "tpu", "--run-dir", tmp_path / "new")
    assert res.exit_code == 2 and "model.device" in error_line(res) and "use auto, cpu, cuda or cuda:N (got 'tpu')" \
        in error_line(res)
    assert not (tmp_path / "new").exists()


def test_read_only_run_folder(run, no_weights):
    from tests.core.test_writable import read_only, writable_again

    read_only(run)
    try:
        res = cli("extract", "--run-dir", run)
    finally:
        writable_again(run)
    assert res.exit_code == 2 and f"run folder {run} is not writable" in error_line(res)


@pytest.mark.parametrize("extracted", [False, True])
def test_unknown_align_condition_before_the_model(tmp_path, no_weights, extracted):
    _, run = tiny_run(tmp_path, directions=extracted)
    res = cli("align", "--condition", "nosuch", "--run-dir", run)
    assert res.exit_code == 2
    line = error_line(res)
    assert "'nosuch': unknown condition; choose from neutral, inoc, explicit, lossmatch, all" in line
    assert "directions" not in line


def test_steering_layers_out_of_range_before_the_weights(tmp_path, no_weights):
    model, _ = tiny_run(tmp_path, directions=False)
    cfg = tmp_path / "steer.toml"
    cfg.write_text(f'[model]\nname = "{model}"\ndevice = "cpu"\n[steering]\nlayer_sets = [[1], [99]]\n')
    res = cli("finetune", "--which", "steering", "--config", cfg, "--run-dir", tmp_path / "new")
    assert res.exit_code == 2
    assert "layer(s) [99] out of range" in error_line(res) and "3 layers (0 to 2" in error_line(res)


@pytest.mark.parametrize("section, bad, message", [
    ("align", 'lossmatch_pool = ["You are terse.", "You are a pirate.", "You are a chef."]',
     "align.lossmatch_pool has 3 prompts; at least 20 are needed"),
    ("align", 'lossmatch_pool = ["Answer in CAPITAL LETTERS."]', "align.lossmatch_pool: 1 prompt(s) mention the trait"),
    ("drift", 'panel = ["You are a helpful assistant.", "Answer the question below."]',
     "drift.panel prompts are also training prompts: ['You are a helpful assistant.']"),
    ("drift", 'panel = ["Answer the question below.", "Answer the question below."]', "drift.panel lists a prompt twice"),
])
def test_bad_prompt_sets_before_the_weights(tmp_path, no_weights, section, bad, message):
    """The loss-matched pool and the drift panel depend on the config and the trait only: a bad one is refused by
    every command before the model loads (the pool used to fail in align after model loading and extract)."""
    model, _ = tiny_run(tmp_path, directions=False)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[model]\nname = "{model}"\ndevice = "cpu"\n[{section}]\n{bad}\n')
    res = cli("extract", "--config", cfg, "--run-dir", tmp_path / "new")
    assert res.exit_code == 2
    assert message in error_line(res)
    assert not (tmp_path / "new").exists()


def test_truncated_gguf_is_named(tmp_path):
    whole = write_tiny_gguf(tmp_path / "whole.gguf")
    cut = tmp_path / "downloaded.gguf"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    res = cli("extract", "--model", cut, "--device", "cpu", "--run-dir", tmp_path / "new")
    assert res.exit_code == 2
    line = error_line(res)
    assert f"{cut} is truncated or corrupt" in line and ".tmp-" not in line
    assert not (tmp_path / "new").exists()


def test_template_without_system_role(tmp_path):
    from tests.models.test_template import gemma_tokenizer

    model, run = tiny_run(tmp_path, directions=False)
    gemma_tokenizer().save_pretrained(model)
    snap = snapshot(run)
    res = cli("extract", "--run-dir", run)
    assert res.exit_code == 2 and "model.system_role = \"fold\"" in error_line(res)
    assert "System role not supported" in error_line(res)
    assert snapshot(run) == snap  # refused before anything was written


def test_fold_is_recorded_in_provenance(tmp_path):
    from nnsight_inoc.core.runconfig import run_config
    from nnsight_inoc.study import open_study
    from tests.models.test_template import gemma_tokenizer

    model, run = tiny_run(tmp_path, directions=False, model={"system_role": "fold"})
    gemma_tokenizer().save_pretrained(model)
    study = open_study(run_config(run), run, "pytest")
    fact = study.prov.data["facts"]["model"]
    assert fact["system_role"] == "fold" and any("folded" in n for n in fact["notes"])
    assert fact["template_default_system"] is None


def test_template_default_system_prompt_is_recorded(run):
    from nnsight_inoc.study import open_study

    study = open_study(None, run, "pytest")  # None: the run folder's own config
    assert study.prov.data["facts"]["model"]["template_default_system"].startswith("You are Qwen, created by Alibaba")


def test_preset_and_config_file_together(tmp_path, no_weights):
    """File keys override the preset, flags override both; both are recorded (data build needs no model)."""
    from nnsight_inoc.core.runconfig import folder_config
    from nnsight_inoc.data.splits import save_splits

    run = tmp_path / "new"
    save_splits(tiny_splits(), run / "data")  # prebuilt, so no prompt-set download
    mine = tmp_path / "my.toml"
    mine.write_text("seed = 4\n[finetune]\nsteps = 3\n[data]\ngeneration_batch_size = 5\n")
    res = cli("data", "build", "--preset", "smoke", "--config", mine, "--seed", "9", "--run-dir", run)
    assert res.exit_code == 0, res.output
    cfg = folder_config(run)
    assert cfg.model.name == "smollm2-135m-instruct" and cfg.finetune.steps == 3 and cfg.finetune.batch_size == 4
    assert cfg.data.generation_batch_size == 5 and cfg.seed == 9
    import json

    inv = json.loads((run / "provenance.json").read_text())["invocations"][-1]
    assert inv["config_sources"]["preset"] == "smoke" and inv["config_sources"]["flags"] == {"seed": 9}
    assert inv["config_sources"]["config_file"]["path"] == str(mine.resolve())


def test_unexpected_error_is_one_line_unless_debug(run, monkeypatch):
    def boom(study):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setattr("nnsight_inoc.stages.extract.run_extract", boom)
    res = cli("extract", "--run-dir", run)
    assert res.exit_code == 1
    assert error_line(res) == "Error: unexpected RuntimeError: boom; second line (`cli.py --debug ...` shows the " \
                              "traceback)"
    res = CliRunner().invoke(main, ["--debug", "extract", "--run-dir", str(run)])
    assert isinstance(res.exception, RuntimeError) and "Error:" not in res.output


def test_one_line_joins_a_listing():
    from nnsight_inoc.cli.errors import one_line

    assert one_line("invalid config (x):\n  unknown key 'a'\n  b: bad") == "invalid config (x): unknown key 'a'; b: bad"


def test_every_command_reports_errors_in_one_line():
    """The kind, not the cases: every command's body goes through handle_errors."""
    import click

    from nnsight_inoc.cli.errors import handle_errors

    def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
        out = []
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                out += commands(cmd, f"{prefix}{name} ")
            else:
                out.append((prefix + name, cmd))
        return out

    found = commands(main)
    assert len(found) >= 11
    unwrapped = [name for name, cmd in found if getattr(cmd.callback, "__wrapped__", None) is None
                 or cmd.callback.__code__ is not handle_errors(lambda: None).__code__]
    assert not unwrapped, unwrapped
