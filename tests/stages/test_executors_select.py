"""One selector for the finetune plan's four executors (issue 25 item 1), without a model.

Each executor name (``finetune --executor`` or ``execution.executor``) reaches its own code path (the run
functions are replaced by recorders); an option of another executor is refused in one line with exit 2;
configs written before ``workers`` and ``ray`` existed load and keep their meaning; provenance records the
executor, what chose it and its options. The executors' numbers are ``tests/test_pipeline.py``'s.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner, Result

from nnsight_inoc.cli import main
from nnsight_inoc.core.config import load_config
from tests._cli import error_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def calls(monkeypatch, tmp_path):
    """Replace every executor's run function (and the study opening) by recorders; returns the list of calls."""
    from nnsight_inoc.cli import finetune as F
    from nnsight_inoc.cli.opening import resolve
    from nnsight_inoc.core.artifacts import Provenance
    from nnsight_inoc.stages import drift, executors, grouped, ray_exec, workers

    log: list[tuple[str, dict]] = []

    @contextlib.contextmanager
    def opened(opts, provenance=None, *, shared=False, weights=True, needs=None, summary_only=False):
        r = resolve(opts)
        log.append(("opened", {"provenance": provenance, "shared": shared, "weights": weights}))
        yield SimpleNamespace(cfg=r.cfg, run_dir=r.run_dir,
                              prov=Provenance(tmp_path / "provenance.json", "pytest"))

    def recorder(name):  # the args after the study (launch takes none)
        return lambda *a, **k: log.append((name, {"args": a if name == "launch" else a[1:], **k}))

    monkeypatch.setattr(F, "opened", opened)
    monkeypatch.setattr(executors, "run_sequential", recorder("sequential"))
    monkeypatch.setattr(grouped, "run_grouped", recorder("grouped"))
    monkeypatch.setattr(workers, "run_worker", recorder("worker"))
    monkeypatch.setattr(workers, "launch", recorder("launch"))
    monkeypatch.setattr(ray_exec, "run_finetune_ray", recorder("ray"))
    monkeypatch.setattr(drift, "run_drift", recorder("drift"))
    monkeypatch.setattr("nnsight_inoc.study.preflight", lambda *a, **k: {})
    monkeypatch.setattr("nnsight_inoc.core.stage_inputs.check_inputs", lambda *a, **k: None)  # tested in test_cli_inputs
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return log


def cli(tmp_path: Path, *args: str, config: str | None = None) -> Result:
    run = tmp_path / "run"
    (run / "finetune").mkdir(parents=True, exist_ok=True)
    (run / "sft_completions.json").write_text("{}")  # the workers launcher checks align made them
    extra = ["--config", config] if config else ["--preset", "smoke"]
    return CliRunner().invoke(main, ["finetune", "--which", "main", *args, *extra, "--run-dir", str(run)])




def old_config(tmp_path: Path, executor: str, group_size: int | None = None) -> str:
    """A config as written before issue 25 ([execution] held sequential or grouped)."""
    p = tmp_path / f"old_{executor}.toml"
    text = f'[model]\nname = "smollm2-135m-instruct"\n[execution]\nexecutor = "{executor}"\n'
    p.write_text(text + (f"group_size = {group_size}\n" if group_size is not None else ""))
    return str(p)


def names(log):
    return [n for n, _ in log if n != "opened"]


def stage(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "provenance.json").read_text())["stages"]["finetune_executor_main"]


@pytest.mark.parametrize("executor, expect", [("sequential", ["sequential"]), ("grouped", ["grouped"]),
                                              ("workers", ["launch", "drift"]), ("ray", ["ray"])])
def test_each_executor_name_selects_its_code_path(tmp_path, calls, executor, expect):
    extra = {"workers": ["--gpus", "0,1"], "ray": ["--ray-local-cpus", "2"]}.get(executor, [])
    res = cli(tmp_path, "--executor", executor, *extra)
    assert res.exit_code == 0, res.output
    assert names(calls) == expect
    rec = stage(tmp_path)
    assert rec["executor"] == executor and rec["chosen_by"] == "--executor" and rec["completed"]
    if executor == "workers":
        argv = calls[0][1]["args"][0]  # the workers' own command line
        assert argv[argv.index("--worker-group") + 1] == "run" and calls[0][1]["args"][1] == [0, 1]
        assert rec["options"] == {"gpus": [0, 1], "worker_group": "run"}
    if executor == "ray":
        ray = calls[-1][1]["args"][1]
        assert ray.local_cpus == 2 and ray.grouping == "run"
        assert rec["options"]["local_cpus"] == 2 and rec["options"]["grouping"] == "run"
    if executor == "grouped":
        assert rec["options"] == {"group_size": 0, "activation_checkpointing": "none"}


@pytest.mark.parametrize("executor, expect", [("sequential", "sequential"), ("grouped", "grouped")])
def test_the_config_selects_when_no_executor_is_named(tmp_path, calls, executor, expect):
    res = cli(tmp_path, config=old_config(tmp_path, executor))
    assert res.exit_code == 0, res.output
    assert names(calls) == [expect]
    assert stage(tmp_path)["chosen_by"].startswith("execution.executor, --config")


def test_config_workers_and_ray_take_their_options_from_the_command_line(tmp_path, calls):
    res = cli(tmp_path, "--gpus", "0", config=old_config(tmp_path, "workers"))
    assert res.exit_code == 0 and names(calls) == ["launch", "drift"], res.output
    res = cli(tmp_path, config=old_config(tmp_path, "workers"))
    assert res.exit_code == 2 and "needs --gpus" in error_line(res)
    res = cli(tmp_path, "--ray-local-cpus", "1", config=old_config(tmp_path, "ray"))
    assert res.exit_code == 0 and names(calls)[-1] == "ray", res.output
    res = cli(tmp_path, config=old_config(tmp_path, "ray"))  # no cluster named, no RAY_ADDRESS
    assert res.exit_code == 2 and "exactly one of --ray-address" in error_line(res)


def test_old_command_lines_map_to_the_new_names(tmp_path, calls):
    grouped = old_config(tmp_path, "grouped")
    # --executor sequential + config grouped ran grouped before; the flag now decides
    assert cli(tmp_path, "--executor", "sequential", config=grouped).exit_code == 0 and names(calls) == ["sequential"]
    calls.clear()
    assert cli(tmp_path, "--executor", "grouped").exit_code == 0 and names(calls) == ["grouped"]
    calls.clear()
    # --gpus alone is shorthand for --executor workers --gpus (with a config that does not choose otherwise)
    res = cli(tmp_path, "--gpus", "0,1")
    assert res.exit_code == 0 and names(calls) == ["launch", "drift"] and stage(tmp_path)["chosen_by"] == "--gpus"
    calls.clear()
    res = cli(tmp_path, "--gpus", "0,1", config=grouped)  # grouped workers before: now it must be said
    assert res.exit_code == 2 and "--executor workers --gpus ... --worker-group seed" in error_line(res)
    res = cli(tmp_path, "--executor", "workers", "--gpus", "0,1", "--worker-group", "seed", config=grouped)
    argv = calls[0][1]["args"][0]
    assert res.exit_code == 0 and argv[argv.index("--worker-group") + 1] == "seed"
    assert stage(tmp_path)["options"] == {"gpus": [0, 1], "worker_group": "seed", "group_size": 0,
                                               "activation_checkpointing": "none"}
    calls.clear()
    # --executor ray --ray-group seed trains grouped whatever the config says
    res = cli(tmp_path, "--executor", "ray", "--ray-local-cpus", "1", "--ray-group", "seed")
    assert res.exit_code == 0 and calls[-1][1]["args"][1].grouping == "seed"
    assert stage(tmp_path)["options"]["group_size"] == 0


def test_a_bare_worker_keeps_the_configs_grouping(tmp_path, calls):
    """The worker process (a campaign's `finetune --worker`): a seed's runs grouped under a grouped config."""
    grouped = old_config(tmp_path, "grouped")
    assert cli(tmp_path, "--worker", "--seeds", "0", config=grouped).exit_code == 0
    assert names(calls) == ["worker"] and calls[-1][1]["grouping"] == "seed" and calls[-1][1]["args"][1] == [0]
    assert cli(tmp_path, "--worker", "--worker-group", "run", config=grouped).exit_code == 0
    assert calls[-1][1]["grouping"] == "run"
    assert cli(tmp_path, "--worker").exit_code == 0 and calls[-1][1]["grouping"] == "run"
    assert cli(tmp_path, "--worker", "--executor", "workers").exit_code == 0
    assert [o for n, o in calls if n == "opened"][-1]["shared"]


@pytest.mark.parametrize("args, option, owner", [
    (["--executor", "sequential", "--gpus", "0"], "--gpus", "workers"),
    (["--executor", "grouped", "--ray-group", "seed"], "--ray-group", "ray"),
    (["--executor", "sequential", "--worker-group", "seed"], "--worker-group", "workers"),
    (["--executor", "workers", "--gpus", "0", "--ray-local-cpus", "2"], "--ray-local-cpus", "ray"),
    (["--executor", "ray", "--ray-local-cpus", "2", "--gpus", "0"], "--gpus", "workers"),
    (["--executor", "ray", "--ray-local-cpus", "2", "--worker-group", "seed"], "--worker-group", "workers"),
    (["--ray-address", "10.0.0.1:6379"], "--ray-address", "ray"),  # the config's executor: sequential
    (["--worker", "--ray-retries", "1"], "--ray-retries", "ray"),
])
def test_an_option_of_another_executor_is_refused_in_one_line(tmp_path, calls, args, option, owner):
    res = cli(tmp_path, *args)
    assert res.exit_code == 2
    assert f"{option} is an option of --executor {owner}" in error_line(res)
    assert names(calls) == []  # refused before anything ran or opened


@pytest.mark.parametrize("args, message", [
    (["--worker", "--executor", "ray"], "takes no --executor ray"),
    (["--worker", "--gpus", "0"], "a worker itself takes no --gpus"),
    (["--seeds", "0"], "--worker only"),
])
def test_worker_process_refusals(tmp_path, calls, args, message):
    res = cli(tmp_path, *args)
    assert res.exit_code == 2 and message in error_line(res)


def test_group_size_asked_for_where_nothing_is_grouped_is_refused(tmp_path, calls):
    cfg = old_config(tmp_path, "grouped", group_size=4)
    res = cli(tmp_path, "--executor", "sequential", config=cfg)
    assert res.exit_code == 2 and "execution.group_size = 4" in error_line(res)
    res = cli(tmp_path, "--executor", "ray", "--ray-local-cpus", "1", config=cfg)  # --ray-group run
    assert res.exit_code == 2 and "--ray-group seed" in error_line(res)
    assert cli(tmp_path, config=cfg).exit_code == 0 and stage(tmp_path)["options"] == {"group_size": 4, "activation_checkpointing": "none"}
    res = cli(tmp_path, "--executor", "ray", "--ray-local-cpus", "1", "--ray-group", "seed", config=cfg)
    assert res.exit_code == 0 and stage(tmp_path)["options"]["group_size"] == 4


def test_help_lists_the_four_executors_in_one_place():
    out = CliRunner().invoke(main, ["finetune", "--help"]).output
    for line in ("sequential  one run at a time", "grouped     a seed's runs", "workers     one claim-worker",
                 "ray         Ray tasks"):
        assert line in out
    assert "--executor [sequential|grouped|workers|ray]" in out


def test_old_configs_load_and_keep_their_meaning():
    for path in ("gpu/decisive_allcaps.toml", "gpu/allcaps_clock_gpu.toml",
                 "results/bench/h200x2_2026-11-30/grouped_vs_sequential_tf32/grouped/config.toml"):
        assert load_config(ROOT / path).execution.executor == "grouped"
    assert load_config(ROOT / "results/allcaps_controls/config.toml").execution.executor == "sequential"


def test_run_refuses_an_executor_it_cannot_run_before_any_stage(tmp_path, monkeypatch):
    monkeypatch.setattr("nnsight_inoc.study.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    res = CliRunner().invoke(main, ["run", "--config", old_config(tmp_path, "ray"), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and "`finetune --executor ray`" in error_line(res)
    from nnsight_inoc.core.errors import UsageProblem
    from nnsight_inoc.stages.executors import run_finetune

    study = SimpleNamespace(cfg=load_config(Path(old_config(tmp_path, "workers"))))
    with pytest.raises(UsageProblem, match="--executor workers"):
        run_finetune(study, "main")


def test_the_ray_task_and_the_worker_group_as_their_grouping_says(monkeypatch):
    from nnsight_inoc.stages import ray_exec, workers
    from nnsight_inoc.stages.plan import RunSpec

    seen = []
    monkeypatch.setattr(ray_exec, "run_group", lambda *a, **k: seen.append(k["grouped"]) or {})
    for grouped in (True, False):
        ray_exec.RunTask(None, None, "cpu", None, grouped=grouped)(None)
    assert seen == [True, False]

    runs = [RunSpec(c, 0, c) for c in ("neutral", "inoc")]
    plan = SimpleNamespace(seed_major=lambda only=None: runs)
    monkeypatch.setattr(workers, "build_plan", lambda *a, **k: plan)
    monkeypatch.setattr(workers, "claim", lambda *a: True)
    monkeypatch.setattr(workers, "execute_seed_runs", lambda s, p, mine, **k: seen.append(("seed", len(mine))))
    monkeypatch.setattr(workers, "execute_run", lambda s, p, run, **k: seen.append(("run", run.name)))
    missing = SimpleNamespace(drift_json=SimpleNamespace(is_file=lambda: False))
    stages = {}

    def study(executor):
        return SimpleNamespace(cfg=SimpleNamespace(execution=SimpleNamespace(executor=executor)),
                               layout=SimpleNamespace(run=lambda *a: missing, claims_dir=None),
                               prov=SimpleNamespace(stage=lambda name, s, **k: stages.update({name: k})))

    seen.clear()
    workers.run_worker(study("grouped"), "main")  # a bare worker under a grouped config
    workers.run_worker(study("sequential"), "main", grouping="seed")
    workers.run_worker(study("grouped"), "main", grouping="run")
    assert seen == [("seed", 2), ("seed", 2), ("run", "neutral_seed0"), ("run", "inoc_seed0")]
    assert stages["worker_main"]["executor"] == "workers" and stages["worker_main"]["worker_group"] == "run"
    assert workers.cli_base("main", {}, "seed")[-2:] == ["--worker-group", "seed"]


def test_activation_checkpointing_where_nothing_is_grouped_is_refused(tmp_path, calls):
    p = tmp_path / "ckpt.toml"
    p.write_text('[model]\nname = "smollm2-135m-instruct"\n[execution]\nexecutor = "grouped"\n'
                 'activation_checkpointing = "attn_mlp"\n')
    res = cli(tmp_path, "--executor", "sequential", config=str(p))
    assert res.exit_code == 2 and "execution.activation_checkpointing = 'attn_mlp'" in error_line(res)
    assert cli(tmp_path, config=str(p)).exit_code == 0
    assert stage(tmp_path)["options"] == {"group_size": 0, "activation_checkpointing": "attn_mlp"}
