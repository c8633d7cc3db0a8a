"""What each stage command needs in its run folder before it can start, checked before the model loads.

Why here: a stage started on a folder without its inputs used to load the model (minutes for the study
model) and then fail, sometimes after writing config.toml and provenance.json. The CLI calls
:func:`check_inputs` before the lock and the weights (``cli/opening.py``), and ``report`` calls
:func:`check_run_folder`; both raise :class:`~nnsight_inoc.core.errors.UsageProblem` (exit 2) naming the
missing file and the command that makes it.
"""

from __future__ import annotations

from pathlib import Path

from nnsight_inoc.core.errors import UsageProblem
from nnsight_inoc.core.layout import DRIFT_JSON, RunLayout

# Stage command -> what it reads that an earlier command makes. data build and extract need nothing (extract
# builds the prompt splits itself); run makes everything in order.
NEEDS_DIRECTIONS = ("align", "transfer", "finetune", "drift")
NEEDS_TRAINED = ("drift",)


def missing_inputs(run_dir: Path, command: str, *, summary_only: bool = False) -> list[str]:
    """Each input of ``command`` missing from ``run_dir``, as 'PATH (run `cmd` first)'; [] when all are there."""
    lay = RunLayout(Path(run_dir))
    out = []
    if command in NEEDS_DIRECTIONS and not lay.directions.is_file():
        out.append(f"{lay.directions} (run `extract` first)")
    if command in NEEDS_TRAINED:
        if summary_only and not any(lay.finetune_dir.glob(f"*/{DRIFT_JSON}")):
            out.append(f"a finished run's {DRIFT_JSON} under {lay.finetune_dir} (run `finetune` or `drift` first)")
        elif not summary_only and not lay.trained_runs():
            out.append(f"a trained run's train.json under {lay.finetune_dir} (run `finetune` first)")
    return out


def check_inputs(run_dir: Path, command: str, *, summary_only: bool = False) -> None:
    """UsageProblem naming every missing input of ``command`` (nothing is written or loaded)."""
    missing = missing_inputs(run_dir, command, summary_only=summary_only)
    if missing:
        raise UsageProblem(f"`{command}` on {run_dir} needs what earlier stages make; missing: " + "; ".join(missing))


def check_run_folder(run_dir: Path) -> None:
    """UsageProblem unless ``run_dir`` is a run folder with the files every report reads."""
    lay = RunLayout(Path(run_dir))
    if not Path(run_dir).is_dir():
        raise UsageProblem(f"{run_dir} does not exist; pass a run folder (one `cli.py run --run-dir DIR` made)")
    if not lay.config.is_file() and not lay.provenance.is_file():
        raise UsageProblem(f"{run_dir} is not a run folder: it has no {lay.config.name} or {lay.provenance.name} "
                           "(a run folder is what `cli.py run --run-dir DIR` or a stage command makes)")
    missing = [f"{p} (run `{cmd}` first)" for p, cmd in ((lay.provenance, "extract"), (lay.extract_summary, "extract"),
                                                          (lay.align_summary, "align --condition all"))
               if not p.is_file()]
    if missing:
        raise UsageProblem(f"{run_dir} has nothing to report yet; missing: " + "; ".join(missing))
