"""How a CLI command gets its config and study: resolve, check without weights, lock, then open.

The order is the promise that no mistake damages a run folder: nothing is written into it
until the command's inputs are validated (:func:`nnsight_inoc.study.preflight`), and no two
commands work in it at once (:func:`nnsight_inoc.core.lock.run_folder_lock`). Writing under
the repository's ``results/`` (the published results) needs ``--publish``.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nnsight_inoc.core.errors import UsageProblem
from nnsight_inoc.core.layout import is_published
from nnsight_inoc.core.runconfig import Resolved, resolve_config
from nnsight_inoc.core.stage_inputs import check_inputs


def command_line() -> str:
    """The command as a user would retype it (recorded in provenance and lock files)."""
    return " ".join(shlex.quote(a) for a in ["python", "cli.py", *sys.argv[1:]])


FLAGS = {"model": "model.name", "backend": "backend.kind", "ndif_host": "backend.host", "ndif_port": "backend.port",
         "ndif_tls": "backend.tls", "ndif_api_key_env": "backend.api_key_env", "device": "model.device",
         "dtype": "model.dtype", "seed": "seed"}


def resolve(opts: dict[str, Any], *, use_folder: bool = True, writes: bool = True) -> Resolved:
    """The command's config over the run folder's own (nothing written).

    ``writes``: the command writes into the run folder, so one under results/ needs --publish.
    ``use_folder=False``: the command works on no run folder (bench).
    """
    flags = {key: opts.get(opt) for opt, key in FLAGS.items()}
    names = {key: "--" + opt.replace("_", "-") for opt, key in FLAGS.items()}
    r = resolve_config(opts.get("run_dir"), opts.get("preset"), opts.get("config_path"), flags, names,
                       use_folder=use_folder)
    if use_folder and writes:
        require_publish(r.run_dir, opts.get("publish", False))
    return r


def require_publish(path: Path, publish: bool) -> None:
    """Writing under the repository's results/ is publishing: only with --publish (exit 2 otherwise)."""
    if is_published(path) and not publish:
        raise UsageProblem(f"{path} is in results/, the published results; add --publish to write there, or "
                           "choose a folder under artifacts/")


@contextlib.contextmanager
def opened(opts: dict[str, Any], provenance: str | None = None, *, shared: bool = False,
           weights: bool = True, needs: str | None = None, summary_only: bool = False) -> Iterator[Any]:
    """Resolve, check (no weights), lock the run folder, then open the study (model load, provenance).

    ``weights=False``: the model's structure only (the Ray driver plans and writes; its tasks load weights).
    ``needs``: the stage command whose inputs must be in the folder (:mod:`nnsight_inoc.core.stage_inputs`),
    checked before anything is written or loaded.
    """
    from nnsight_inoc.core.lock import run_folder_lock
    from nnsight_inoc.study import open_study, preflight

    r = resolve(opts)
    preflight(r.cfg, r.run_dir, origins=r.origins)  # before the lock creates the folder
    if needs is not None:  # the earlier stages' files, after the config's own checks (a bad flag first)
        check_inputs(r.run_dir, needs, summary_only=summary_only)
    with run_folder_lock(r.run_dir, command_line(), shared=shared):
        yield open_study(r.cfg, r.run_dir, command_line(), provenance=provenance, origins=r.origins,
                         sources=r.sources, weights=weights)
