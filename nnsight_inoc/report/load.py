"""Reading a run folder for the report: every file through the layout, each checked against its schema.

A required file that is missing raises FileNotFoundError naming the path; one that is
present but lacks the keys its schema requires raises ValueError naming both. Optional
stages (drift, steering, the precision experiment) load as None when they have not run.

A drift summary written before issue 16 lacks the relation's rank, AUROC and collinearity
entries: :func:`drift_summary` adds them from the summary's own per-run rows with the run's
bootstrap settings (the entries it already has are reproduced exactly by the same code, so they
are kept), and lists what it added under ``relation["added_by_report"]``. Loaded summaries are
cached per file and content hash, because every drift rule reads the summary.
"""

from __future__ import annotations

import copy
import hashlib
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nnsight_inoc.core.artifacts import read_json
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.core.schema import (
    AlignSummary,
    DriftSummary,
    ExtractSummary,
    LossMatch,
    ProvenanceRecord,
    read_checked,
)
from nnsight_inoc.report.control_c import example_regression
from nnsight_inoc.report.monitoring import monitoring_within
from nnsight_inoc.stats.relation import relation_summary

_CACHE: dict[tuple[str, str], dict[str, Any]] = {}


@dataclass(frozen=True)
class Run:
    """Everything the report reads; required files raise FileNotFoundError naming the path."""

    dir: Path
    provenance: dict[str, Any]
    config: dict[str, Any]
    data_card: dict[str, Any]
    extract: dict[str, Any]
    align: dict[str, Any]
    lossmatch: dict[str, Any]
    precision: dict[str, Any] | None  # optional experiment, reported only when present
    example: dict[str, Any] | None = None  # control C per example (report.control_c); None without its inputs
    monitoring_within: dict[str, Any] | None = None  # report.monitoring; {error} without its inputs

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.dir)


def load_run(run_dir: Path) -> Run:
    """Read the run folder; a missing stage output is an error, not an empty section."""
    layout = RunLayout(run_dir)
    if not layout.config.is_file():
        raise FileNotFoundError(f"missing artifact {layout.config}; run the stage that makes it first")
    run = Run(
        dir=layout.root,
        provenance=read_checked(layout.provenance, ProvenanceRecord),
        config=tomllib.loads(layout.config.read_text()),
        data_card=read_json(layout.data_card),
        extract=_nulls_to_nan(read_checked(layout.extract_summary, ExtractSummary)),
        align=_nulls_to_nan(read_checked(layout.align_summary, AlignSummary)),
        lossmatch=_nulls_to_nan(read_checked(layout.lossmatch, LossMatch)),
        precision=read_json(layout.precision_check) if layout.precision_check.is_file() else None,
    )
    if int(run.align["layer"]) != int(run.extract["chosen"]["layer"]):
        raise ValueError(f"align layer {run.align['layer']} != extract chosen layer {run.extract['chosen']['layer']}"
                         f" in {run_dir}: the stages ran with different directions")
    try:
        example = example_regression(run.dir, run.align, run.config)
    except FileNotFoundError:
        example = None
    try:
        within = monitoring_within(run.dir, run.extract, run.config)
    except (FileNotFoundError, ValueError) as err:
        within = {"error": str(err)}
    return replace(run, example=example, monitoring_within=within)


def drift_summary(run_dir: Path) -> dict[str, Any] | None:
    """The drift stage's summary (per-run rows and correlations), or None when it has not run; a summary
    from before issue 16 gets the new relation entries from its rows (see the module docstring)."""
    layout = RunLayout(run_dir)
    path = layout.summary(steering=False)
    if not path.is_file():
        return None
    key = (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest())  # mtimes can tie within a tick
    if key not in _CACHE:
        summ = read_checked(path, DriftSummary)
        if "collinearity" not in summ["relation"]:
            cfg = tomllib.loads(layout.config.read_text()) if layout.config.is_file() else {}
            new = relation_summary(summ["rows"], int(cfg.get("align", {}).get("n_bootstrap", 2000)),
                                   int(cfg.get("seed", 0)), skip=set(summ["relation"]))
            added = [k for k in new if k not in summ["relation"]]
            summ["relation"].update({k: new[k] for k in added})
            summ["relation"]["added_by_report"] = added
        _CACHE[key] = summ
    return copy.deepcopy(_CACHE[key])


def steering_summary(run_dir: Path) -> dict[str, Any] | None:
    """`drift --which steering`'s summary (main conditions + steering runs), or None when it has not run."""
    path = RunLayout(run_dir).summary(steering=True)
    return read_checked(path, DriftSummary) if path.is_file() else None


def _nulls_to_nan(obj: Any) -> Any:
    """In the numeric summaries, JSON null means "not computed" (NaN on write): read it back as NaN,
    so it prints as nan and fails every threshold, instead of crashing a format or a comparison."""
    if obj is None:
        return float("nan")
    if isinstance(obj, dict):
        return {k: _nulls_to_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nulls_to_nan(v) for v in obj]
    return obj
