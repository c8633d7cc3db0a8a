"""Click CLI: ``python cli.py <command>`` or the ``nnsight-inoc`` console script.

Each study command resolves one typed config (defaults < preset or --config file <
flags), writes it into the run folder, and runs its stage.
"""

from __future__ import annotations

import functools
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click
from rich.table import Table

from nnsight_inoc.core.config import (
    PRESETS,
    ConfigError,
    StudyConfig,
    apply_overrides,
    load_config,
)


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["python", "cli.py", *sys.argv[1:]])


def study_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The shared options of every study command."""
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Study config TOML file."),
        click.option("--preset", type=click.Choice(PRESETS), help="A shipped config (allcaps = default study)."),
        click.option("--model", help="Preset name, hub id, local HF folder or local .gguf file."),
        click.option("--backend", type=click.Choice(["local", "remote"]),
                     help="Where nnsight traces execute: local, or remote (an NDIF server; see README 'Remote backend')."),
        click.option("--ndif-host", envvar="NNSIGHT_INOC_NDIF_HOST",
                     help="NDIF host name, no scheme [env NNSIGHT_INOC_NDIF_HOST; default api.ndif.us]."),
        click.option("--ndif-port", type=int, envvar="NNSIGHT_INOC_NDIF_PORT",
                     help="NDIF port [env NNSIGHT_INOC_NDIF_PORT; default: the scheme's]."),
        click.option("--ndif-tls/--ndif-no-tls", default=None, envvar="NNSIGHT_INOC_NDIF_TLS",
                     help="TLS to the NDIF server [env NNSIGHT_INOC_NDIF_TLS; default on]."),
        click.option("--ndif-api-key-env", envvar="NNSIGHT_INOC_NDIF_API_KEY_ENV",
                     help="Name of the env var holding the NDIF API key [default NDIF_API_KEY]."),
        click.option("--device", help="auto, cpu, cuda, cuda:N."),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="Model weight dtype."),
        click.option("--seed", type=int, help="Global seed."),
        click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder (default artifacts/<trait>_<model>)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def resolve(
    config_path: str | None,
    preset: str | None,
    model: str | None,
    backend: str | None,
    ndif_host: str | None,
    ndif_port: int | None,
    ndif_tls: bool | None,
    ndif_api_key_env: str | None,
    device: str | None,
    dtype: str | None,
    seed: int | None,
    run_dir: str | None,
) -> tuple[StudyConfig, Path]:
    try:
        cfg = load_config(config_path, preset)
        cfg = apply_overrides(
            cfg,
            {"model.name": model, "backend.kind": backend, "backend.host": ndif_host, "backend.port": ndif_port,
             "backend.tls": ndif_tls, "backend.api_key_env": ndif_api_key_env,
             "model.device": device, "model.dtype": dtype, "seed": seed},
        )
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    if run_dir is None:
        run_dir = str(Path("artifacts") / f"{cfg.trait.name}_{Path(cfg.model.name).name.replace('.gguf', '')}")
    return cfg, Path(run_dir)


def _open(opts: dict[str, Any], provenance: str | None = None, weights: bool = True):  # -> Study (slow import)
    from nnsight_inoc.study import open_study

    cfg, run_dir = resolve(**opts)
    return open_study(cfg, run_dir, _command_line(), provenance=provenance, weights=weights)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Known failure types become one clear line and exit 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        from nnsight_inoc.data.splits import DataError
        from nnsight_inoc.models.errors import ModelError
        from nnsight_inoc.trace.chat import ChatFormatError
        from nnsight_inoc.trace.loss import NonFiniteError
        from nnsight_inoc.trace.tracing import TracingError

        try:
            from nnsight.intervention.backends.remote import RemoteError
        except ImportError:  # pragma: no cover - nnsight layout changed
            RemoteError = ConnectionError  # noqa: N806

        from nnsight_inoc.cluster.ray_tasks import TasksFailed

        try:
            return fn(*a, **k)
        except TasksFailed as err:  # the message names every failed run; the finished ones are written
            raise click.ClickException(str(err)) from None
        except (ConfigError, ModelError, DataError, ChatFormatError, TracingError, NonFiniteError,
                FileNotFoundError, NotImplementedError, ValueError) as err:
            raise click.ClickException(f"{type(err).__name__}: {err}") from None
        except (RemoteError, ConnectionError) as err:
            from nnsight import CONFIG

            raise click.ClickException(f"{type(err).__name__} from the NDIF server {CONFIG.API.HOST}: {err}") from None

    return wrapper


@click.group()
def main() -> None:
    """nnsight_inoc: does inoculation prompting rotate training gradients away from a trait direction?"""


@main.group()
def models() -> None:
    """List and fetch the offline models."""


@models.command("list")
def models_list() -> None:
    """Show the offline presets and whether each is cached."""
    from nnsight_inoc.core.progress import console
    from nnsight_inoc.models.load import list_presets

    table = Table("name", *[k for k in list_presets()[0] if k != "name"])
    for row in list_presets():
        table.add_row(row["name"], *[str(v) for k, v in row.items() if k != "name"])
    console.print(table)


@models.command("fetch")
@click.argument("name")
@handle_errors
def models_fetch(name: str) -> None:
    """Download, verify (sha256) and convert a preset into the cache; no-op when already valid."""
    from nnsight_inoc.models.cache import fetch

    click.echo(str(fetch(name)))


@main.group()
def data() -> None:
    """Prompt splits."""


@data.command("build")
@study_options
@handle_errors
def data_build(**opts: Any) -> None:
    """Build the three disjoint prompt splits and the data card into <run-dir>/data."""
    from nnsight_inoc.core import artifacts as A
    from nnsight_inoc.core.config import dump_toml
    from nnsight_inoc.core.layout import RunLayout
    from nnsight_inoc.study import ensure_splits

    cfg, run_dir = resolve(**opts)
    layout = RunLayout(run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    A.write_text(layout.config, dump_toml(cfg))
    splits = ensure_splits(cfg, run_dir)
    click.echo(
        f"direction {len(splits.direction)} (+{len(splits.direction_heldout)} held out), sft {len(splits.sft)}, "
        f"eval {len(splits.eval)}; sha256 {splits.sha256()[:16]}; card: {layout.data_card}"
    )


@main.command()
@study_options
@handle_errors
def extract(**opts: Any) -> None:
    """Build v(l) (promote minus suppress means) and run the held-out and monitoring checks."""
    from nnsight_inoc.stages.extract import run_extract

    run_extract(_open(opts))


@main.command()
@click.option("--condition", default="all", show_default=True,
              help="A configured condition name (neutral, inoc, explicit, ...), 'lossmatch', or 'all'.")
@study_options
@handle_errors
def align(condition: str, **opts: Any) -> None:
    """Per-example gradient alignment cos(-g, v) under training-time system prompts, with controls."""
    from nnsight_inoc.stages.align import run_align

    run_align(_open(opts), condition)


WHICH = click.option("--which", type=click.Choice(["main", "variants", "all", "steering"]),
                     help="Main conditions, the trait's wording variants, or both; 'steering' = the main conditions "
                     "plus the preventative-steering sweep of [steering] (default: finetune.which).")


def _int_list(_ctx: Any, _param: Any, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 0,1,1, got {value!r}") from None


@main.command()
@WHICH
@click.option("--gpus", callback=_int_list,
              help="Parallel: one worker per listed CUDA device (0,1,2,3; list a device twice for two workers "
                   "on it). Each worker trains a run and measures its drift; the summary follows.")
@click.option("--worker", is_flag=True,
              help="Run as one parallel worker: claim runs not held by a live process, train each and measure its drift.")
@click.option("--seeds", "only_seeds", callback=_int_list,
              help="With --worker: only these of finetune.seeds (e.g. 0 or 1,2), so a campaign can order a sweep's "
                   "first seed before another study. Workers take runs seed-major either way.")
@click.option("--executor", type=click.Choice(["sequential", "ray"]), default="sequential", show_default=True,
              help="ray: one Ray task per run (train + drift, files returned to this process), then the summary "
                   "(README 'Running on a cluster').")
@click.option("--ray-address", envvar="RAY_ADDRESS", help="An existing Ray cluster [env RAY_ADDRESS].")
@click.option("--ray-local-gpus", callback=_int_list, help="Start a Ray cluster on this host with these GPUs (0,1).")
@click.option("--ray-local-cpus", type=int, help="Start a CPU-only Ray cluster on this host with N worker slots.")
@click.option("--ray-gpus-per-task", type=float, help="GPUs per run (0.5: two runs per GPU) [1; 0 on the CPU].")
@click.option("--ray-cpus-per-task", type=float, help="CPUs per run (its OMP_NUM_THREADS) [1; local: cores/runs].")
@click.option("--ray-memory-gb", type=float, help="Host memory per run in GB [CPU runs: 3x the weights].")
@click.option("--ray-retries", type=int, default=2, show_default=True, help="Retries of a failed run.")
@click.option("--ray-group", type=click.Choice(["run", "seed"]), default="run", show_default=True,
              help="One Ray task per run, or per seed (its runs one after another in one process).")
@click.option("--ray-in-flight", type=int, help="Tasks submitted at once [what the cluster holds now].")
@study_options
@handle_errors
def finetune(which: str | None, gpus: list[int] | None, worker: bool, only_seeds: list[int] | None, executor: str,
             **opts: Any) -> None:
    """LoRA finetune per condition x seed, probing cos(-g, v) during training (resumable)."""
    import os

    from nnsight_inoc.stages.drift import run_drift
    from nnsight_inoc.stages.executors import run_finetune
    from nnsight_inoc.stages.workers import cli_base, launch, run_worker

    if gpus is not None and worker:
        raise click.UsageError("--gpus starts workers; a worker itself takes no --gpus")
    if only_seeds is not None and not worker:
        raise click.UsageError("--seeds applies to a --worker only (the other modes train every configured seed)")
    ray_flags = {k: opts.pop(k) for k in list(opts) if k.startswith("ray_")}
    source = {k: click.get_current_context().get_parameter_source(k).name for k in ray_flags}
    if executor == "ray":
        from nnsight_inoc.stages.ray_exec import RayOptions, run_finetune_ray

        if gpus is not None or worker:
            raise click.UsageError("--executor ray runs its own workers; it takes no --gpus or --worker")
        ray = RayOptions.from_flags(ray_flags, address_from_env=source["ray_address"] == "ENVIRONMENT")
        study = _open(opts, weights=False)  # the driver plans and writes; the tasks load the model
        run_finetune_ray(study, which or study.cfg.finetune.which, ray)
        return
    if given := [k for k, v in source.items() if v == "COMMANDLINE"]:
        raise click.UsageError(f"{', '.join('--' + k.replace('_', '-') for k in given)} need --executor ray")
    if gpus is not None:
        cfg, run_dir = resolve(**opts)
        which = which or cfg.finetune.which
        if cfg.backend.kind == "remote":
            raise click.UsageError("LoRA training is local only; --gpus needs --backend local")
        from nnsight_inoc.core.layout import RunLayout

        layout = RunLayout(run_dir)
        if not layout.sft_completions.is_file():  # else every worker would generate them at once
            raise click.UsageError(f"{layout.sft_completions} is missing: run `align` first (it makes them)")
        launch(cli_base(which, opts), gpus, layout.logs_dir)
        run_drift(_open(opts), which)  # every run has drift.json by now: this writes the summary and plots
        return
    if worker:
        study = _open(opts, provenance=f"worker{os.environ.get('NNSIGHT_INOC_WORKER', os.getpid())}")
        run_worker(study, which or study.cfg.finetune.which, only_seeds)
        return
    study = _open(opts)
    run_finetune(study, which or study.cfg.finetune.which)


@main.command()
@WHICH
@click.option("--summary-only", is_flag=True,
              help="Only summarise the runs that have drift.json (e.g. a GPU campaign that ran out of time); "
                   "the runs not run are listed in the summary and the report.")
@study_options
@handle_errors
def drift(which: str | None, summary_only: bool, **opts: Any) -> None:
    """Trait expression and projection before vs after finetuning, and whether alignment predicts drift."""
    from nnsight_inoc.stages.drift import run_drift
    from nnsight_inoc.stages.drift_summary import summarise_drift

    study = _open(opts)
    if summary_only:
        s = summarise_drift(study, which or study.cfg.finetune.which, partial=True)
        click.echo(f"summarised {s['n_runs']} finished runs; not run: {len(s['not_run'])} {s['not_run']}")
        return
    run_drift(study, which or study.cfg.finetune.which)


@main.command()
@click.option("--out-dir", type=click.Path(file_okay=False), help="Where to write (default: the run folder).")
@study_options
@handle_errors
def report(out_dir: str | None, **opts: Any) -> None:
    """Write report.md and a self-contained report.html from a run folder's JSON (no model needed)."""
    from nnsight_inoc.report.sections import write_report

    _, run_dir = resolve(**opts)
    md, htm = write_report(run_dir, Path(out_dir) if out_dir else None)
    click.echo(f"wrote {md} and {htm}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@handle_errors
def compare(run_dirs: tuple[str, ...], out_dir: str) -> None:
    """Cross-trait summary: alignment effect, drift effect and their relation per study, side by side."""
    from nnsight_inoc.report.cross_trait import write_cross_trait

    click.echo(f"wrote {write_cross_trait([Path(d) for d in run_dirs], Path(out_dir))}")


@main.command()
@click.option("--scale", type=click.Choice(["real", "7b", "both"]), default="both", show_default=True,
              help="The configured model, the Qwen2.5-7B shape with random weights, or both.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--words", default=90, show_default=True, help="Words per prompt and per completion.")
@click.option("--reps", default=5, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False), default="results/bench", show_default=True)
@study_options
@handle_errors
def bench(scale: str, batch_size: int, words: int, reps: int, out_dir: str, **opts: Any) -> None:
    """Time nnsight gradient capture vs raw hooks, LoRA steps and generation; FLOP utilisation vs matmul."""
    import torch

    from nnsight_inoc.core import artifacts as A
    from nnsight_inoc.core.config import dump_toml
    from nnsight_inoc.models.load import load_model, resolve_device

    try:
        from perf.bench import qwen7b_shape, run_bench
    except ImportError:
        raise click.ClickException("bench lives in the source checkout's perf/ folder: run it as "
                                   "`python cli.py bench` from the repository root") from None

    cfg, _ = resolve(**opts)
    device = resolve_device(cfg.model.device)
    models = {}
    loaded = load_model(cfg.model.name, device=device, dtype=cfg.model.dtype) if scale in ("real", "both") else None
    if loaded is not None:
        models[f"{loaded.name} ({cfg.model.dtype})"] = (loaded.hf_model, loaded.tokenizer)
    if scale in ("7b", "both"):
        if loaded is None:
            loaded = load_model(cfg.model.name, device="cpu", dtype="float32")  # only for its tokenizer
        models["qwen2.5-7b shape, random (bfloat16)"] = (qwen7b_shape(torch.bfloat16, device), loaded.tokenizer)
    result = run_bench(models, batch_size, words, reps)
    result.update(command=_command_line(), config=dump_toml(cfg), versions=A.versions(), device=A.device_info(),
                  git=A.git_info(), date=time.strftime("%Y-%m-%d"))
    path = Path(out_dir) / "bench.json"
    A.write_json(path, result)
    for label, r in result["models"].items():
        click.echo(f"{label}: nnsight/raw {r['nnsight_over_raw']:.3f} (device-only raw {r['nnsight_over_raw_device']:.3f}), {r['tokens_per_s']:.0f} tok/s grad pass, "
                   f"util {r.get('grad_pass_util', float('nan')):.2f}, LoRA util {r.get('lora_util', float('nan')):.2f}, "
                   f"gen {r['generation_tokens_per_s']:.0f} tok/s")
    click.echo(f"wrote {path}")


@main.command()
@study_options
@handle_errors
def run(**opts: Any) -> None:
    """The study end to end: data, extract, align, finetune, drift, report; unchanged stages are reused."""
    from nnsight_inoc.core.progress import log
    from nnsight_inoc.pipeline import run_all

    t0 = time.time()
    study = _open(opts)
    md = run_all(study)
    log(f"done in {time.time() - t0:.0f} s; results in {study.run_dir}; report: {md}")


if __name__ == "__main__":
    main()
