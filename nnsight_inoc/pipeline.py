"""`run`: every stage in order, reusing a stage whose inputs and config are unchanged.

A finished stage leaves ``stages/<name>.json`` holding a fingerprint of what it depends
on (the config sections it reads, the model sha256 and dtype, the data splits' hash, and
the fingerprints of the stages before it). The marker is written only after the stage's
own files, atomically, so an interrupted stage is simply run again; finetune and drift
also resume run by run (see :mod:`nnsight_inoc.stages.executors`). The git commit is deliberately not
part of the fingerprint: a docs-only commit should not force a GPU rerun; pass a fresh
``--run-dir`` after a change to the measurement code.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.core.progress import log
from nnsight_inoc.report.sections import write_report
from nnsight_inoc.stages.align import run_align
from nnsight_inoc.stages.drift import run_drift
from nnsight_inoc.stages.executors import run_finetune
from nnsight_inoc.stages.extract import run_extract
from nnsight_inoc.stages.transfer import run_transfer
from nnsight_inoc.study import Study


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def fingerprints(study: Study) -> dict[str, str]:
    """What each stage depends on, chained so a change upstream invalidates everything after it."""
    c = study.cfg
    base = {
        "model": [study.loaded.name, study.loaded.sha256, study.loaded.dtype, c.model.autocast]
        # model.system_role only when not the default, so that existing stage markers stay current
        + ([c.model.system_role] if c.model.system_role != "native" else []),
        "splits": study.splits.sha256(),
        "trait": c.trait.model_dump(),
        "seed": c.seed,
    }
    fp: dict[str, str] = {}
    fp["extract"] = _hash({**base, "extract": c.extract.model_dump()})
    al: dict[str, Any] = {"up": fp["extract"], "align": c.align.model_dump(), "sft": c.data.sft_max_new_tokens}
    if c.leak.targets:  # sections added by issue 16 enter only when used: older run folders keep their markers
        al["leak"] = c.leak.model_dump()
    fp["align"] = _hash(al)
    ft: dict[str, Any] = {"up": fp["align"], "finetune": c.finetune.model_dump()}
    if c.finetune.which == "steering":  # only then does the sweep shape the runs (other fingerprints unchanged)
        ft["steering"] = c.steering.model_dump()
    if c.intervene.arms and c.finetune.which in ("main", "all"):  # issue 22's arms, when they are in the sweep
        ft["intervene"] = c.intervene.model_dump()
    fp["transfer"] = _hash({**ft, "transfer": c.transfer.model_dump(), "panel": c.drift.panel,
                            "gen": c.extract.max_new_tokens})
    fp["finetune"] = _hash(ft)
    dr: dict[str, Any] = {"up": fp["finetune"], "gen": c.extract.max_new_tokens}
    if c.drift.panel:
        dr["drift"] = c.drift.model_dump()
    fp["drift"] = _hash(dr)
    return fp


def is_current(run_dir: Path, name: str, fingerprint: str) -> bool:
    path = RunLayout(run_dir).stage_marker(name)
    return path.is_file() and A.read_json(path).get("fingerprint") == fingerprint


def mark_done(run_dir: Path, name: str, fingerprint: str, seconds: float) -> None:
    A.write_json(RunLayout(run_dir).stage_marker(name),
                 {"stage": name, "fingerprint": fingerprint, "seconds": round(seconds, 2),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


RESUMED_PER_RUN = ("finetune", "drift")
LOCAL_ONLY = ("transfer", "finetune", "drift")  # LoRA weights live on this machine


def _check_resumable(run_dir: Path, name: str, fingerprint: str) -> None:
    """Finetune and drift resume run by run; refuse to mix runs made from other inputs."""
    if name not in RESUMED_PER_RUN:
        return
    started = RunLayout(run_dir).stage_started(name)
    if started.is_file() and A.read_json(started).get("fingerprint") != fingerprint:
        raise ValueError(
            f"{name} runs in {run_dir} were made from other inputs or config; "
            "give the config they were made with (the folder's config.toml), or use another --run-dir to redo them"
        )
    A.write_json(started, {"stage": name, "fingerprint": fingerprint})


def run_all(study: Study) -> Path:
    """data, extract, align (all conditions), transfer (when enabled), finetune, drift, report; returns the
    report path."""
    study.splits  # builds (or checks) the splits first: every fingerprint needs their hash
    fp = fingerprints(study)
    which = study.cfg.finetune.which
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("extract", lambda: run_extract(study)),
        ("align", lambda: run_align(study, "all")),
        *([("transfer", lambda: run_transfer(study))] if study.cfg.transfer.enabled else []),
        ("finetune", lambda: run_finetune(study, which)),
        ("drift", lambda: run_drift(study, which)),
    ]
    if study.tlm.remote:  # said loudly and recorded; the report then shows drift as not run
        skipped = [n for n, _ in steps if n in LOCAL_ONLY]
        steps = [(n, f) for n, f in steps if n not in LOCAL_ONLY]
        log(f"remote backend: skipping {', '.join(skipped)} (LoRA training needs local weights); "
            "run `cli.py finetune` and `cli.py drift` with --backend local")
        study.prov.fact("skipped_stages", {"stages": skipped, "reason": "remote backend: LoRA training is local only"})
    for name, fn in steps:
        if is_current(study.run_dir, name, fp[name]):
            log(f"{name}: inputs and config unchanged, reusing {study.run_dir}")
            continue
        _check_resumable(study.run_dir, name, fp[name])
        t0 = time.time()
        fn()
        mark_done(study.run_dir, name, fp[name], time.time() - t0)
    md, _ = write_report(study.run_dir)
    return md
