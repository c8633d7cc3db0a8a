"""nnsight_inoc: does inoculation prompting rotate training gradients away from a trait direction?

The front door for experiment authors (``experiments/``): everything a traced experiment needs,
importable from here in one line::

    from nnsight_inoc import gradient_cosines, load_config, load_direction, open_study

Names are resolved on first use, so ``import nnsight_inoc`` (and ``cli.py --help``) stays fast:
torch, transformers and nnsight load only when a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "StudyConfig": "nnsight_inoc.core.config",
    "load_config": "nnsight_inoc.core.config",
    "apply_overrides": "nnsight_inoc.core.config",
    "run_config": "nnsight_inoc.core.runconfig",
    "RunLayout": "nnsight_inoc.core.layout",
    "Study": "nnsight_inoc.study",
    "open_study": "nnsight_inoc.study",
    "ensure_sft": "nnsight_inoc.study",
    "load_direction": "nnsight_inoc.study",
    "load_directions": "nnsight_inoc.study",
    "gradient_cosines": "nnsight_inoc.study",
    "reporting_layer": "nnsight_inoc.study",
    "write_json": "nnsight_inoc.core.artifacts",
    "bootstrap_mean_ci_by_col": "nnsight_inoc.stats.bootstrap",
    "paired_bootstrap_diff_by_col": "nnsight_inoc.stats.bootstrap",
    "Batch": "nnsight_inoc.trace.chat",
    "encode_chats": "nnsight_inoc.trace.chat",
    "gradient_index": "nnsight_inoc.trace.chat",
    "TracedLM": "nnsight_inoc.trace.tracing",
    "read_residuals": "nnsight_inoc.probes.reads",  # the trace's, with its index shape checked first
    "capture_gradients": "nnsight_inoc.trace.tracing",
    "GradientMetrics": "nnsight_inoc.probes.gradients",
    "gradient_metrics": "nnsight_inoc.probes.gradients",
    "metrics": "nnsight_inoc.measures.alignment",
    "SIGN_NOTE": "nnsight_inoc.measures.alignment",
    "get_trait": "nnsight_inoc.data.traits",
    "score_texts": "nnsight_inoc.data.traits",
}

__all__ = [
    "Batch",
    "GradientMetrics",
    "RunLayout",
    "SIGN_NOTE",
    "Study",
    "StudyConfig",
    "TracedLM",
    "apply_overrides",
    "bootstrap_mean_ci_by_col",
    "capture_gradients",
    "encode_chats",
    "ensure_sft",
    "get_trait",
    "gradient_cosines",
    "gradient_index",
    "gradient_metrics",
    "load_config",
    "load_direction",
    "load_directions",
    "metrics",
    "open_study",
    "paired_bootstrap_diff_by_col",
    "read_residuals",
    "reporting_layer",
    "run_config",
    "score_texts",
    "write_json",
]

if TYPE_CHECKING:  # what static tools see; at run time the names load on first use (__getattr__)
    from nnsight_inoc.core.artifacts import write_json
    from nnsight_inoc.core.config import StudyConfig, apply_overrides, load_config
    from nnsight_inoc.core.layout import RunLayout
    from nnsight_inoc.core.runconfig import run_config
    from nnsight_inoc.data.traits import get_trait, score_texts
    from nnsight_inoc.measures.alignment import SIGN_NOTE, metrics
    from nnsight_inoc.probes.gradients import GradientMetrics, gradient_metrics
    from nnsight_inoc.probes.reads import read_residuals
    from nnsight_inoc.stats.bootstrap import (
        bootstrap_mean_ci_by_col,
        paired_bootstrap_diff_by_col,
    )
    from nnsight_inoc.study import (
        Study,
        ensure_sft,
        gradient_cosines,
        load_direction,
        load_directions,
        open_study,
        reporting_layer,
    )
    from nnsight_inoc.trace.chat import Batch, encode_chats, gradient_index
    from nnsight_inoc.trace.tracing import TracedLM, capture_gradients


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nnsight_inoc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
