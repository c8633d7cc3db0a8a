"""What every study command shares: the study options, config resolution, opening a study, one-line errors."""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import click

from nnsight_inoc.core.config import (
    PRESETS,
    ConfigError,
    StudyConfig,
    apply_overrides,
    load_config,
)


def command_line() -> str:
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


def open_study_from(opts: dict[str, Any], provenance: str | None = None, weights: bool = True):  # -> Study (slow import)
    from nnsight_inoc.study import open_study

    cfg, run_dir = resolve(**opts)
    return open_study(cfg, run_dir, command_line(), provenance=provenance, weights=weights)


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


def int_list(_ctx: Any, _param: Any, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 0,1,1, got {value!r}") from None
