"""Reading a run folder for the report: every file through the layout, each checked against its schema.

A required file that is missing raises FileNotFoundError naming the path; one that is
present but lacks the keys its schema requires raises ValueError naming both. Optional
stages (drift, steering, the precision experiment) load as None when they have not run.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
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
    return run


def drift_summary(run_dir: Path) -> dict[str, Any] | None:
    """The drift stage's summary (per-run rows and correlations), or None when it has not run."""
    path = RunLayout(run_dir).summary(steering=False)
    return read_checked(path, DriftSummary) if path.is_file() else None


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
