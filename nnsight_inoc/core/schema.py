"""Typed schemas of the JSON summaries the report reads, and a check that a loaded file has them.

The stages write these files (names in :mod:`nnsight_inoc.core.layout`); the report, the
cross-trait table and the verdict rules read them. A ``TypedDict`` per file says what a reader
may rely on; :func:`require_keys` checks the required top-level keys at load time, so a
truncated or foreign file fails with one line naming the file and the missing keys instead of
a ``KeyError`` deep inside a rule. Optional keys (``total=False`` or ``NotRequired``) are those
older published runs may lack. Numbers that could not be computed are JSON null, read back as
NaN by the report.
"""

# No `from __future__ import annotations` here: TypedDict must see NotRequired at runtime (Python 3.11).
from pathlib import Path
from typing import Any, Mapping, NotRequired, TypedDict

from nnsight_inoc.core.artifacts import read_json


class CorrStats(TypedDict):
    """Pearson/Spearman with bootstrap CIs (``stats.correlation.pearson_spearman``)."""

    pearson_r: float
    pearson_p: float
    pearson_lo: float
    pearson_hi: float
    spearman_r: float
    spearman_p: float
    spearman_lo: float
    spearman_hi: float
    n: int
    n_dropped_nan: NotRequired[int]
    n_boot_degenerate: NotRequired[int]
    error: NotRequired[str]


class Chosen(TypedDict):
    layer: int
    auroc: float
    cohens_d: float
    pearson_r: float
    spearman_r: float


class ExtractSummary(TypedDict):
    """``extract/extract_summary.json``: v(l) and its checks; per-layer lists have one entry per layer."""

    trait: str
    promote: str
    suppress: str
    positions: list[str]
    model_sha256: str | None
    model_name: str
    splits_sha256: str
    layer: int
    layer_rule: str
    n_direction_train: int
    n_direction_heldout: int
    behaviour: dict[str, dict[str, float]]  # "train/promote" ... -> mean_score, share_above_half, n, n_unscored
    heldout_auroc: dict[str, list[float]]  # position -> (L,)
    heldout_cohens_d: dict[str, list[float]]
    # system_prompts, n_generations, n_unscored, mean_score_by_prompt, by_layer: [CorrStats]; since issue 16
    # also within_prompt (report.monitoring.within_prompt_summary)
    monitoring: dict[str, Any]
    chosen: Chosen


class MeanCI(TypedDict):
    mean: list[float]
    lo: list[float]
    hi: list[float]


class ConditionSummary(TypedDict):
    system_prompt: str  # for per-example prompts: the first one (the full list stays in align/cond_<name>.pt)
    n: int
    loss: MeanCI  # one entry
    cos: dict[str, MeanCI]  # position -> (L,) curves
    norm: dict[str, MeanCI]
    proj: dict[str, MeanCI]
    per_example_prompts: NotRequired[dict[str, Any]]  # {n, n_distinct, template} (issue 16 content-leak controls)
    content_loss: NotRequired[MeanCI]  # loss of the untraited answer under this prompt (issue 16)
    leak: NotRequired[dict[str, Any]]  # the content-leak control's own record (its dial), as measured


class LossContrast(TypedDict):
    diff: float
    lo: float
    hi: float
    p: float


class AlignSummary(TypedDict):
    """``align/align_summary.json``: per-condition CIs, paired contrasts with nulls, the regression control.

    ``contrasts["a-b"]`` holds ``loss`` (a :class:`LossContrast`) and, per position, per-layer lists
    diff_cos, lo, hi, p_boot(_holm/_bh), null_p_exact(_holm), null_p_mc(_holm), null_sd, null_z,
    null_mc_sd, diff_norm. ``regression["<position>/inoc_vs_<baseline>"]`` is one dict per layer.

    Issue 16 (absent from older runs): ``example_regression`` = control C per example,
    ``{note, by_position: {position: {"<layer>": {primary, mediator}}}}`` with each model as returned by
    ``stats.regression.example_level_effect``; ``loss_split`` = ``{parts, conditions: {c: {total, content,
    trait: {mean, lo, hi, p}}}, without_content_loss}``; ``leak_match`` = ``{leak_<t>: {target, dial,
    reduction, target_reduction, gap_share: {mean, lo, hi}, tolerance, matched}}``.

    Issue 22 (absent from older runs; stages/align_beyond.py, stages/align_structured.py): ``beyond_leak`` =
    ``{words, positions: [b1.., b_sum], method, n_examples, n_excluded, excluded_ids, without, conditions: {c:
    {cos: {position: MeanCI}}}, contrasts: {a-b: {position: <the contrasts' per-layer keys>}}}`` (or ``{error,
    without}``); ``leak_shift`` = ``{note, beyond_error, conditions: {leak_c: {base, words, quoted: {a..: {diff_cos,
    lo, hi, p_boot}}, beyond: {b..: ...}, quoted_same_examples: {a_sum: ...}}}}``; ``structured_null`` =
    ``{contrast, layer, position, n_examples, v, other_traits: {trait: entry} | null, pcs: {n, of, directions:
    {pc<i>: entry + explained_variance}}, trait_free: {t: {shift, inoc_minus}}}`` with each entry ``{diff_cos,
    lo, hi, p_boot[, cos_with_v]}`` at the reporting layer.
    """

    sign_convention: str
    layer: int
    positions: list[str]
    direction_position: str
    n_random: int
    null_note: str
    n_bootstrap: int
    conditions: dict[str, ConditionSummary]
    contrasts: dict[str, dict[str, Any]]
    regression: dict[str, list[dict[str, float]]]
    lossmatch: NotRequired[dict[str, Any]]
    regression_conditions: NotRequired[list[str]]
    example_regression: NotRequired[dict[str, Any]]
    loss_split: NotRequired[dict[str, Any]]
    leak_match: NotRequired[dict[str, Any]]
    beyond_leak: NotRequired[dict[str, Any]]
    leak_shift: NotRequired[dict[str, Any]]
    structured_null: NotRequired[dict[str, Any]]


class LossMatch(TypedDict):
    """``align/lossmatch.json``: the loss-matched control's candidates and the chosen prompt."""

    target_condition: str
    target_prompt: str
    target_mean_loss: float
    neutral_mean_loss: float
    n_examples: int
    pool: list[str]
    candidates: list[dict[str, Any]]
    chosen_prompt: str
    chosen_gap: float
    gap_as_share_of_neutral_to_target: float | None
    max_trait_score: float
    seconds: float
    trait_reference: NotRequired[str]
    trait_reference_score: NotRequired[float]


class DriftRow(TypedDict):
    """One finished run in the drift summary; alignment at the reporting layer, summed assistant tokens."""

    condition: str
    seed: int
    align_pre: float
    align_during: float
    probe_loss_pre: float
    drift_score: float
    drift_share: float
    drift_proj: float
    train_prompt_post_score: float
    pre_score: float
    post_score: float
    steering: dict[str, Any] | None
    loss_reduction: float | None
    # issue 16 (absent from older runs; None where a run lacks the input)
    probe_content_loss_pre: NotRequired[float | None]
    loss_reduction_content: NotRequired[float | None]
    loss_reduction_trait: NotRequired[float | None]
    drift_panel_score: NotRequired[float]
    drift_panel_proj: NotRequired[float]
    drift_panel_by_prompt: NotRequired[dict[str, float]]
    transfer: NotRequired[float | None]
    transfer_cos: NotRequired[float | None]
    transfer_residual: NotRequired[float | None]
    transfer_rest: NotRequired[float | None]
    transfer_panel: NotRequired[float]


class DriftSummary(TypedDict):
    """``finetune/finetune_summary.json`` (and ``steering_summary.json``).

    Issue 16 (absent from older runs): ``main_drift`` (the drift the verdicts use), ``panel`` (from
    ``stats.intervals.panel_intervals``), and relation entries for the loss split, transfer, rank, AUROC,
    ``collinearity`` and ``transfer_ranking`` (see ``stats.relation``). Issue 22 (absent from older runs):
    ``contrasts`` = {measure, method, min_seeds, negligible_drift, pairs: {"a-b": per-seed contrast block of
    ``stats.contrasts.seed_contrast``}}, what the drift verdicts read.
    """

    layer: int
    position: str
    which: str
    n_runs: int
    not_run: list[str]
    sign_note: str
    rows: list[DriftRow]
    correlations: dict[str, Any]
    relation: dict[str, Any]  # "pred~target[|control]" -> {r, lo, hi, n_runs, n_groups, ...} or {error}
    condition_means: dict[str, dict[str, float]]
    main_drift: NotRequired[str]
    panel: NotRequired[dict[str, Any]]
    contrasts: NotRequired[dict[str, Any]]


class TrainRecord(TypedDict):
    """``finetune/<run>/train.json``, written last by training: its presence marks a trained run.
    ``probes[0]`` may carry ``content_loss`` (issue 16); ``system_prompt`` is a list for per-example prompts."""

    condition: str
    seed: int
    system_prompt: str | list[str]
    finetune_config: dict[str, Any]
    n_assistant_tokens: int
    model: dict[str, Any]
    n_sft: int
    probe_ids: list[str]
    positions: list[str]
    losses: list[float]
    step_ids: list[list[str]]
    probes: list[dict[str, Any]]  # {step, loss, cos: (L, P) nested lists}
    sign_note: str
    wall_s: float
    steering: NotRequired[dict[str, Any] | None]
    timing_s: NotRequired[dict[str, float]]
    peak_cuda_memory_gb: NotRequired[dict[str, float] | None]


class DriftRecord(TypedDict):
    """``finetune/<run>/drift.json``: pre vs post under the neutral test prompt and the training prompt."""

    condition: str
    seed: int
    n_prompts: int
    neutral_prompt: dict[str, Any]  # {pre, post, drift}
    training_prompt: dict[str, Any]
    wall_s: NotRequired[float]
    panel: NotRequired[dict[str, dict[str, Any]]]  # test prompt -> {pre, post, drift} (issue 16)
    panel_design: NotRequired[dict[str, int]]  # {n_prompts, max_new_tokens} under the panel
    measured_with: NotRequired[list[str]]  # the runs whose adapters were attached together (K > 1)
    # how the trained runs' answers were decoded (issue 24): {"mode": "merged", "rows_per_call", "calls", "rows"};
    # absent in drift.json written before (each measurement on its own, in batches of data.generation_batch_size)
    decode: NotRequired[dict[str, Any]]


class ProvenanceRecord(TypedDict):
    """``provenance.json``: every invocation, the stages' seconds and the run's facts (model, backend, ...)."""

    command: str
    started: str
    git: dict[str, Any]
    versions: dict[str, str | None]
    device: dict[str, Any]
    stages: dict[str, dict[str, Any]]
    facts: dict[str, Any]
    invocations: NotRequired[list[dict[str, Any]]]


def require_keys(obj: Mapping[str, Any], schema: type, path: Path | str) -> None:
    """ValueError naming ``path`` and every required key of ``schema`` that ``obj`` lacks."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a JSON object ({schema.__name__}), got {type(obj).__name__}")
    missing = sorted(k for k in schema.__required_keys__ if k not in obj)  # type: ignore[attr-defined]
    if missing:
        raise ValueError(f"{path}: not a {schema.__name__} (missing keys {missing}); "
                         "was it written by another version or cut short?")


def read_checked(path: Path, schema: type) -> dict[str, Any]:
    """A JSON summary, checked to have its schema's required keys (FileNotFoundError / ValueError naming the path)."""
    obj = read_json(path)
    require_keys(obj, schema, path)
    return obj
