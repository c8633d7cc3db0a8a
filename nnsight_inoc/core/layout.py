"""Every file a run folder holds: the one definition of its names and paths.

Writers and readers (stages, workers, the report, experiments, the GPU campaign) build paths
only through :class:`RunLayout`, so a name changes in one place and a reader can never look
for a file under another name than its writer used. The names are part of the published
results' format (``results/<study>/``): keep them stable, add rather than rename.

Layout of ``<run>/`` (``artifacts/<trait>_<model>/`` by default)::

    config.toml  provenance.json  provenance.worker<i>.json  report.md  report.html
    precision_check.json  sft_completions.json
    data/splits.json  data/data_card.json
    extract/directions.pt  extract/other_directions.pt  extract/extract_summary.json  extract/monitoring.csv  extract/*.png
    align/cond_<condition>.pt  align/lossmatch.json  align/leak.json  align/align_summary.json  align/rows.csv.gz  align/*.png
    finetune/<condition>_seed<seed>/{train.json, drift.json, adapter/}
    finetune/pre/<hash>.json  finetune/claims/<run>/owner.json  finetune/logs/worker<i>.log
    finetune/finetune_summary.json  finetune/steering_summary.json  finetune/*.png
    transfer/transfer.json
    stages/<stage>.json  stages/<stage>.started.json
    experiments/<name>.json   (written by the scripts in the repository's experiments/)
    .lock/lock  .lock/<host>.<pid>.json   (the run folder's lock and who holds it: core/lock.py)

Outside run folders: commands write under ``artifacts/`` unless the user names a folder
(:func:`default_run_dir`, :data:`COMPARE_DIR`, :data:`BENCH_DIR`); ``results/`` holds the
published results and is written only with ``--publish`` (:func:`is_published`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.toml"
PROVENANCE = "provenance.json"
WORKER_PROVENANCE_GLOB = "provenance.worker*.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_APPENDIX_MD = "report_appendix.md"  # every layer, condition and control (the report leads with the answer)
REPORT_APPENDIX_HTML = "report_appendix.html"
PRECISION_CHECK = "precision_check.json"
SFT_COMPLETIONS = "sft_completions.json"

DATA_DIR = "data"
SPLITS = "splits.json"
DATA_CARD = "data_card.json"

EXTRACT_DIR = "extract"
DIRECTIONS = "directions.pt"
OTHER_DIRECTIONS = "other_directions.pt"  # the other registered traits' v(l), the structured null of C1 (issue 22)
EXTRACT_SUMMARY = "extract_summary.json"
MONITOR_TABLE = "monitoring.csv"
EXTRACT_PLOTS = ("projection_hist.png", "monitor_scatter.png", "separation_vs_layer.png")

ALIGN_DIR = "align"
ALIGN_ROWS = "rows.csv.gz"
ALIGN_SUMMARY = "align_summary.json"
LOSSMATCH = "lossmatch.json"
LEAK = "leak.json"  # the content-leak control's dial search and conditions (issue 16)
ALIGN_CONDITION_GLOB = "cond_*.pt"
LOSS_PLOT = "loss_by_condition.png"


def cos_plot(position: str) -> str:
    return f"cos_vs_layer_{position}.png"


def norm_plot(position: str) -> str:
    return f"norm_vs_layer_{position}.png"


def null_plot(a: str, b: str, position: str) -> str:
    """The random-direction null panel of contrast a - b at one position."""
    return f"null_{a}_minus_{b}_{position}.png"


# What the report shows, in order (a_sum first: the assistant tokens carry the SFT loss).
ALIGN_PLOTS = (cos_plot("a_sum"), cos_plot("final_prompt"), norm_plot("a_sum"), norm_plot("final_prompt"), LOSS_PLOT,
               null_plot("inoc", "neutral", "a_sum"), null_plot("inoc", "neutral", "final_prompt"),
               null_plot("inoc", "lossmatch", "a_sum"), null_plot("inoc", "lossmatch", "final_prompt"))

FINETUNE_DIR = "finetune"
PRE_DIR = "pre"
CLAIMS_DIR = "claims"
LOGS_DIR = "logs"
OWNER = "owner.json"
ADAPTER_DIR = "adapter"
TRAIN_JSON = "train.json"
DRIFT_JSON = "drift.json"
SUMMARY_JSON = "finetune_summary.json"
STEERING_SUMMARY_JSON = "steering_summary.json"
RESTORE_JSON = "restore_v.json"  # restore_v's step-0 factors, shared by its runs of every seed (issue 22)
DRIFT_PLOTS = ("projection_shift_vs_layer.png", "trait_pre_post.png", "alignment_vs_drift.png")
STEERING_PREFIX = "steering_"  # steering summaries' plots: steering_<DRIFT_PLOTS name>
# Added by issue 16, kept out of DRIFT_PLOTS so the published studies (which lack it) still hold every DRIFT_PLOTS file.
PROJECTION_VS_SCORE_PLOT = "projection_vs_score_drift.png"

TRANSFER_DIR = "transfer"
TRANSFER_JSON = "transfer.json"

LOCK_DIR = ".lock"
LOCK_FILE = "lock"

STAGES_DIR = "stages"
EXPERIMENTS_DIR = "experiments"  # what experiments/ scripts write into a run folder


ARTIFACTS = Path("artifacts")  # relative to the working directory, like every default output
PUBLISHED = "results"  # the repository's published results: written only on request (--publish)
COMPARE_DIR = ARTIFACTS / "compare"
BENCH_DIR = ARTIFACTS / "bench"


def default_run_dir(trait: str, model_name: str) -> Path:
    """``artifacts/<trait>_<model>``: a run folder's default place (model: its preset name or file stem)."""
    return ARTIFACTS / f"{trait}_{Path(model_name).name.replace('.gguf', '')}"


def is_published(path: Path, roots: tuple[Path, ...] | None = None) -> bool:
    """Whether ``path`` lies inside a published results folder: ``results/`` of the working directory or of
    the repository this package runs from (``roots`` overrides both, for tests)."""
    if roots is None:
        roots = (Path.cwd() / PUBLISHED, Path(__file__).resolve().parents[2] / PUBLISHED)
    target = path.resolve()
    return any(target == r.resolve() or r.resolve() in target.parents for r in roots)


def run_name(condition: str, seed: int) -> str:
    """Folder name of one finetune run; fixed so later stages find runs without a registry."""
    return f"{condition}_seed{seed}"


def align_condition_file(condition: str) -> str:
    """File name of one condition's per-example alignment measurements."""
    return f"cond_{condition}.pt"


@dataclass(frozen=True)
class RunFiles:
    """The files of one finetune run (``finetune/<condition>_seed<seed>/``)."""

    folder: Path

    @property
    def train_json(self) -> Path:
        """Written last by training: its presence marks a trained run."""
        return self.folder / TRAIN_JSON

    @property
    def drift_json(self) -> Path:
        return self.folder / DRIFT_JSON

    @property
    def adapter(self) -> Path:
        """The PEFT adapter folder (left out of published results: 37 MB per run)."""
        return self.folder / ADAPTER_DIR


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder ``root``. Pure: nothing is created or read here."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # top level
    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def provenance(self) -> Path:
        return self.root / PROVENANCE

    def provenance_of(self, label: str) -> Path:
        """A provenance file of its own (``provenance.<label>.json``) for a process sharing the run folder."""
        return self.root / f"provenance.{label}.json"

    def worker_provenance(self, worker: str) -> Path:
        """One provenance file per parallel worker, so no worker overwrites another's stages."""
        return self.provenance_of(f"worker{worker}")

    def worker_provenances(self) -> list[Path]:
        return sorted(self.root.glob(WORKER_PROVENANCE_GLOB))

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def report_appendix_md(self) -> Path:
        return self.root / REPORT_APPENDIX_MD

    @property
    def report_appendix_html(self) -> Path:
        return self.root / REPORT_APPENDIX_HTML

    @property
    def precision_check(self) -> Path:
        return self.root / PRECISION_CHECK

    @property
    def sft_completions(self) -> Path:
        return self.root / SFT_COMPLETIONS

    # data
    @property
    def data_dir(self) -> Path:
        return self.root / DATA_DIR

    @property
    def splits(self) -> Path:
        return self.data_dir / SPLITS

    @property
    def data_card(self) -> Path:
        return self.data_dir / DATA_CARD

    # extract
    @property
    def extract_dir(self) -> Path:
        return self.root / EXTRACT_DIR

    @property
    def directions(self) -> Path:
        return self.extract_dir / DIRECTIONS

    @property
    def other_directions(self) -> Path:
        return self.extract_dir / OTHER_DIRECTIONS

    @property
    def extract_summary(self) -> Path:
        return self.extract_dir / EXTRACT_SUMMARY

    @property
    def monitor_table(self) -> Path:
        return self.extract_dir / MONITOR_TABLE

    # align
    @property
    def align_dir(self) -> Path:
        return self.root / ALIGN_DIR

    def align_condition(self, condition: str) -> Path:
        return self.align_dir / align_condition_file(condition)

    def align_conditions(self) -> list[Path]:
        return sorted(self.align_dir.glob(ALIGN_CONDITION_GLOB))

    @property
    def align_summary(self) -> Path:
        return self.align_dir / ALIGN_SUMMARY

    @property
    def align_rows(self) -> Path:
        return self.align_dir / ALIGN_ROWS

    @property
    def lossmatch(self) -> Path:
        return self.align_dir / LOSSMATCH

    @property
    def leak(self) -> Path:
        return self.align_dir / LEAK

    # finetune and drift
    @property
    def finetune_dir(self) -> Path:
        return self.root / FINETUNE_DIR

    def run(self, condition: str, seed: int) -> RunFiles:
        return RunFiles(self.finetune_dir / run_name(condition, seed))

    def run_by_name(self, name: str) -> RunFiles:
        return RunFiles(self.finetune_dir / name)

    def trained_runs(self) -> list[Path]:
        """Every finished run's train.json (any condition, seed)."""
        return sorted(self.finetune_dir.glob(f"*/{TRAIN_JSON}"))

    @property
    def pre_dir(self) -> Path:
        """The base-model behaviour cache (``finetune/pre/``)."""
        return self.finetune_dir / PRE_DIR

    def pre_behaviour(self, key: str) -> Path:
        """Base-model behaviour under one system prompt, cached by a hash of prompt and prompts."""
        return self.pre_dir / f"{key}.json"

    @property
    def restore_record(self) -> Path:
        """restore_v's factors, measured once at step 0 (seed-independent: LoRA B = 0) and reused by each seed's run."""
        return self.finetune_dir / RESTORE_JSON

    @property
    def claims_dir(self) -> Path:
        return self.finetune_dir / CLAIMS_DIR

    @property
    def logs_dir(self) -> Path:
        return self.finetune_dir / LOGS_DIR

    def summary(self, steering: bool) -> Path:
        """Steering runs get their own summary: pooling them with the prompt conditions' alignment-drift
        relation would mix two interventions."""
        return self.finetune_dir / (STEERING_SUMMARY_JSON if steering else SUMMARY_JSON)

    def drift_plots(self, steering: bool) -> tuple[Path, ...]:
        prefix = STEERING_PREFIX if steering else ""
        return tuple(self.finetune_dir / f"{prefix}{n}" for n in DRIFT_PLOTS)

    def projection_vs_score_plot(self, steering: bool) -> Path:
        """Per run: projection drift against trait-score drift (issue 16)."""
        return self.finetune_dir / f"{STEERING_PREFIX if steering else ''}{PROJECTION_VS_SCORE_PLOT}"

    # cross-context transfer (issue 16 item 8)
    @property
    def transfer_dir(self) -> Path:
        return self.root / TRANSFER_DIR

    @property
    def transfer_json(self) -> Path:
        return self.transfer_dir / TRANSFER_JSON

    def experiment_output(self, name: str) -> Path:
        """Where an experiment script writes its result (``experiments/<name>.json``)."""
        return self.root / EXPERIMENTS_DIR / f"{name}.json"

    # a lock shared by the commands working on this folder (core/lock.py)
    @property
    def lock_dir(self) -> Path:
        return self.root / LOCK_DIR

    @property
    def lock_file(self) -> Path:
        return self.lock_dir / LOCK_FILE

    def lock_holder(self, host: str, pid: int) -> Path:
        """Who holds the lock (one file per holder: several finetune workers hold it shared)."""
        return self.lock_dir / f"{host}.{pid}.json"

    # pipeline bookkeeping
    def stage_marker(self, stage: str) -> Path:
        return self.root / STAGES_DIR / f"{stage}.json"

    def stage_started(self, stage: str) -> Path:
        return self.root / STAGES_DIR / f"{stage}.started.json"
