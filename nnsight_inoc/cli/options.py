"""The options every study command shares, and the comma-separated integer lists some take."""

from __future__ import annotations

from typing import Any, Callable

import click

from nnsight_inoc.core.config import PRESETS

PUBLISH = click.option("--publish", is_flag=True,
                       help="Allow writing into the repository's results/ (the published results).")


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
        click.option("--run-dir", type=click.Path(file_okay=False),
                     help="Run folder (default artifacts/<trait>_<model>); its config.toml is the default config."),
        PUBLISH,
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def int_list(_ctx: Any, _param: Any, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 0,1,1, got {value!r}") from None


WHICH = click.option("--which", type=click.Choice(["main", "variants", "all", "steering"]),
                     help="Main conditions (with the gradient-intervention arms of [intervene] when configured), the "
                     "trait's wording variants, or both; 'steering' = the main conditions "
                     "plus the preventative-steering sweep of [steering] (default: finetune.which).")


def ray_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``finetune --executor ray``'s options (refused for another executor)."""
    opts = [
        click.option("--ray-address", envvar="RAY_ADDRESS", help="[ray] An existing Ray cluster [env RAY_ADDRESS]."),
        click.option("--ray-local-gpus", callback=int_list, help="[ray] Start a Ray cluster on this host with these GPUs (0,1)."),
        click.option("--ray-local-cpus", type=int, help="[ray] Start a CPU-only Ray cluster on this host with N worker slots."),
        click.option("--ray-gpus-per-task", type=float, help="[ray] GPUs per run (0.5: two runs per GPU) [1; 0 on the CPU]."),
        click.option("--ray-cpus-per-task", type=float, help="[ray] CPUs per run (its OMP_NUM_THREADS) [1; local: cores/runs]."),
        click.option("--ray-memory-gb", type=float, help="[ray] Host memory per run in GB [CPU runs: 3x the weights]."),
        click.option("--ray-retries", type=int, default=2, show_default=True, help="[ray] Retries of a failed run."),
        click.option("--ray-group", type=click.Choice(["run", "seed"]), default="run", show_default=True,
                     help="[ray] One Ray task per run, or per seed (its runs trained grouped, K per pass of the base)."),
        click.option("--ray-in-flight", type=int, help="[ray] Tasks submitted at once [what the cluster holds now]."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn
