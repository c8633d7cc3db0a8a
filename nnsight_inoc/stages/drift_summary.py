"""The drift summary: one row per finished run, per-condition means, and "does alignment predict drift?".

Reads only the runs' ``train.json`` and ``drift.json`` (and ``transfer/transfer.json`` when the
transfer stage ran), so it also runs on published results without adapters, and writes
``finetune/finetune_summary.json`` (``steering_summary.json`` for the steering sweep) and its plots.

Issue 16 additions, each present only when the runs carry its inputs:

* the loss reduction split into a content and a trait part, from the step-0 probe's ``loss`` and
  ``content_loss``, relative to the neutral run of the same seed (as ``loss_reduction`` is);
* drift under the panel of trait-free test prompts (``drift.json`` ``panel``): per run the mean over
  the panel (``drift_panel_score``), per condition a CI over panel prompts and seeds at once
  (:func:`~nnsight_inoc.stats.intervals.panel_intervals`), and paired contrasts; it becomes the main
  drift measure (``main_drift``), the neutral test prompt's drift stays beside it;
* cross-context transfer per training prompt (``transfer``, the inner product; see
  :func:`transfer_values`).

Issue 22: ``contrasts``, the paired drift contrasts the verdicts read, at the unit of replication (per-seed
differences of each run's main drift, t-interval over seeds, sign-flip p; ``report.contrast_rules.contrasts``)
for the standard pairs whose conditions were both run. The panel's crossed bootstrap stays as description.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import NEUTRAL_CONDITION
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.core.schema import DriftRecord, TrainRecord, read_checked
from nnsight_inoc.report import plots
from nnsight_inoc.report.contrast_rules import contrasts
from nnsight_inoc.report.controls import leak_target, matched_control
from nnsight_inoc.report.figures_run import render_run_figures, run_styles
from nnsight_inoc.stages.plan import training_conditions
from nnsight_inoc.stats.correlation import pearson_spearman
from nnsight_inoc.stats.intervals import panel_intervals
from nnsight_inoc.stats.relation import NEW_PREDICTORS, condition_means, main_target, relation_summary
from nnsight_inoc.study import Study, load_directions

TRANSFER_KEYS = {"transfer": "inner", "transfer_cos": "cos", "transfer_residual": "inner_residual",
                 "transfer_rest": "inner_rest"}


def _panel(dr: Mapping[str, Any], layer: int) -> dict[str, Any]:
    """Per-run panel drift: by test prompt, its mean (score and projection at ``layer``); {} without a panel."""
    panel = dr.get("panel")
    if not panel:
        return {}
    by = {p: float(b["drift"]["mean_score"]) for p, b in panel.items()}
    return {"drift_panel_by_prompt": by, "drift_panel_score": float(np.mean(list(by.values()))),
            "drift_panel_proj": float(np.mean([b["drift"]["projection"][layer] for b in panel.values()]))}


def _rows(layout: RunLayout, conditions: Sequence[str], seeds: Sequence[int], layer: int,
          partial: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per finished run; with `partial`, runs without drift.json are listed, not an error."""
    rows, missing = [], []
    for cond in conditions:
        for seed in seeds:
            files = layout.run(cond, seed)
            if partial and not files.drift_json.is_file():
                missing.append(files.folder.name)
                continue
            tr, dr = read_checked(files.train_json, TrainRecord), read_checked(files.drift_json, DriftRecord)
            cos = np.array([p["cos"] for p in tr["probes"]])  # (n_probe_steps, L, P)
            j = tr["positions"].index("a_sum")
            content = tr["probes"][0].get("content_loss")
            rows.append({
                "condition": cond, "seed": seed,
                "align_pre": float(cos[0, layer, j]),
                "align_during": float(cos[:, layer, j].mean()),
                "probe_loss_pre": float(tr["probes"][0]["loss"]),
                "probe_content_loss_pre": None if content is None else float(content),
                "drift_score": float(dr["neutral_prompt"]["drift"]["mean_score"]),
                "drift_share": float(dr["neutral_prompt"]["drift"]["share_above_half"]),
                "drift_proj": float(dr["neutral_prompt"]["drift"]["projection"][layer]),
                "drift_proj_by_layer": dr["neutral_prompt"]["drift"]["projection"],
                "train_prompt_post_score": float(dr["training_prompt"]["post"]["mean_score"]),
                "pre_score": float(dr["neutral_prompt"]["pre"]["mean_score"]),
                "steering": tr.get("steering"),
                "post_score": float(dr["neutral_prompt"]["post"]["mean_score"]),
                **_panel(dr, layer),
            })
    return rows, missing


def add_loss_reductions(rows: list[dict[str, Any]]) -> None:
    """Set loss_reduction (and, where both runs measured content_loss, its content and trait parts) per row,
    each relative to the neutral run of the same seed: R = L(neutral) - L(P), R_c = L_c(neutral) - L_c(P),
    R_t = R - R_c (nats, probe set, step 0). None where the seed has no neutral run (counted by the relation)."""
    neutral = {r["seed"]: r for r in rows if r["condition"] == NEUTRAL_CONDITION}
    for r in rows:
        n = neutral.get(r["seed"])
        r["loss_reduction"] = None if n is None else n["probe_loss_pre"] - r["probe_loss_pre"]
        both = n is not None and None not in (n.get("probe_content_loss_pre"), r.get("probe_content_loss_pre"))
        r["loss_reduction_content"] = (n["probe_content_loss_pre"] - r["probe_content_loss_pre"]) if both else None
        r["loss_reduction_trait"] = (r["loss_reduction"] - r["loss_reduction_content"]) if both else None


def transfer_values(layout: RunLayout) -> dict[str, dict[str, float | None]]:
    """Per training condition, the transfer numbers of ``transfer/transfer.json`` ({} when the stage has not run).

    ``transfer`` = ``inner`` (the inner product of the LoRA-parameter gradient of the training loss under
    the prompt with that of the trait's log-probability under the neutral test prompt: how much one step
    raises the trait where drift is measured), ``transfer_cos``, ``transfer_residual`` and ``transfer_rest``
    (the parts through modules writing into the residual stream and through the others), and
    ``transfer_panel``: the mean of the panel entries' inner products (an entry is a number or a mapping
    with ``inner``). ValueError naming the file for any other shape.
    """
    path = layout.transfer_json
    if not path.is_file():
        return {}
    blob = A.read_json(path)
    out: dict[str, dict[str, float | None]] = {}
    for cond, c in blob.get("conditions", {}).items():
        if "inner" not in c:
            raise ValueError(f"{path}: condition {cond!r} has no 'inner' (keys {sorted(c)})")
        vals: dict[str, float | None] = {k: (None if c.get(src) is None else float(c[src]))
                                         for k, src in TRANSFER_KEYS.items()}
        panel = c.get("panel")
        if panel:
            inner = [v if isinstance(v, (int, float)) else v.get("inner") if isinstance(v, Mapping) else None
                     for v in panel.values()]
            if any(not isinstance(v, (int, float)) for v in inner):
                raise ValueError(f"{path}: condition {cond!r} panel entries must be numbers or carry 'inner'")
            vals["transfer_panel"] = float(np.mean(inner))
        out[cond] = vals
    return out


def panel_pairs(conditions: list[str]) -> list[tuple[str, str]]:
    """The panel contrasts: every condition vs neutral, inoc vs its matched control, each leak vs its target."""
    pairs = [(c, NEUTRAL_CONDITION) for c in conditions if c != NEUTRAL_CONDITION and NEUTRAL_CONDITION in conditions]
    ctrl = matched_control(conditions)
    if ctrl is not None and "inoc" in conditions:
        pairs.append(("inoc", ctrl))
    pairs += [(c, leak_target(c)) for c in conditions
              if leak_target(c) in conditions and (c, leak_target(c)) not in pairs and (leak_target(c), c) not in pairs]
    return pairs


def summarise_drift(study: Study, which: str, partial: bool = False) -> dict[str, Any]:
    """Per-run table, per-condition means, and alignment (and loss) vs drift correlations.

    `partial` summarises the finished runs when a campaign ran out of time, and lists the
    runs that were not run in the summary (the report prints them): nothing is silently dropped.
    """
    _, meta = load_directions(study)
    return summarise_runs(study.layout, training_conditions(study, which), study.cfg.finetune.seeds,
                          int(meta["layer"]), which, n_boot=study.cfg.align.n_bootstrap, seed=study.cfg.seed,
                          partial=partial)


def summarise_runs(layout: RunLayout, conditions: Sequence[str], seeds: Sequence[int], layer: int, which: str, *,
                   n_boot: int, seed: int, partial: bool = False) -> dict[str, Any]:
    """:func:`summarise_drift` on a run folder's files alone (no model): the runs of ``conditions`` x ``seeds``,
    alignment and projection at ``layer``; writes the summary and its plots and returns the summary."""
    rows, missing = _rows(layout, conditions, seeds, layer, partial)
    if not rows:
        raise FileNotFoundError(f"no finished runs (drift.json) under {layout.finetune_dir}")
    add_loss_reductions(rows)
    transfer = transfer_values(layout)
    for r in rows:
        r.update(transfer.get(r["condition"], {}))
    corr: dict[str, Any] = {}
    preds = ["align_pre", "align_during", "loss_reduction"] + [p for p in NEW_PREDICTORS
                                                                if any(r.get(p) is not None for r in rows)]
    main = main_target(rows)
    for pred in preds:
        x = np.array([np.nan if r.get(pred) is None else r[pred] for r in rows], dtype=float)
        for target in dict.fromkeys(("drift_score", "drift_proj", main)):
            y = np.array([r[target] for r in rows], dtype=float)
            try:
                corr[f"{pred}~{target}"] = pearson_spearman(x, y, n_boot=n_boot, rng=seed)
            except ValueError as err:  # too few runs or constant values: reported, not hidden
                corr[f"{pred}~{target}"] = {"error": str(err), "n": int(np.isfinite(x).sum())}
    relation = relation_summary(rows, n_boot, seed)
    keys = [k for k in ("align_pre", "align_during", "probe_loss_pre", "drift_score", "drift_proj",
                        "train_prompt_post_score", "post_score", "drift_panel_score", "loss_reduction_trait",
                        "loss_reduction_content", "transfer") if any(r.get(k) is not None for r in rows)]
    summary: dict[str, Any] = {
        "layer": layer,
        "position": "a_sum",
        "which": which,
        "n_runs": len(rows),
        "not_run": missing,
        "sign_note": "alignment = mean cos(-g, v) on the probe set; drift = post - pre under the neutral test prompt"
                     " (drift_panel_*: mean over the panel of trait-free test prompts)",
        "main_drift": main,
        "rows": [{k: v for k, v in r.items() if k != "drift_proj_by_layer"} for r in rows],
        "correlations": corr,  # runs as independent pairs; `relation` resamples conditions (see stats.relation)
        "relation": relation,
        "condition_means": condition_means(rows, keys),
        "contrasts": contrasts(rows, main),  # what the drift verdicts read (issue 22)
    }
    if any(r.get("drift_panel_by_prompt") for r in rows):
        conds = list(dict.fromkeys(r["condition"] for r in rows))
        summary["panel"] = panel_intervals(rows, panel_pairs(conds), n_boot=n_boot, rng=seed)
    steering = which == "steering"
    A.write_json(layout.summary(steering), summary)
    write_plots(layout, steering, rows, layer, relation)
    if not steering:  # the figures of report/figures_*.py that this folder's files allow (the rest say why not)
        render_run_figures(layout.root)
    return summary


def write_plots(layout: RunLayout, steering: bool, rows: list[dict[str, Any]], layer: int,
                relation: Mapping[str, Any]) -> None:
    """The drift plots: projection shift over layers, trait pre/post, alignment vs the main drift (with the
    interval over training prompts the verdicts use and the isotonic fit), projection vs score drift per run."""
    shift_png, pre_post_png, align_png = layout.drift_plots(steering)
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    curves = {}
    for c in conds:
        x = np.array([r["drift_proj_by_layer"] for r in rows if r["condition"] == c])  # (seeds, L)
        lo, hi = (x.min(0), x.max(0)) if len(x) > 1 else (x[0], x[0])
        curves[c] = (x.mean(0), lo, hi)
    sty = run_styles(layout.root, extra=conds)  # the study's one look per condition (report/palette.py)
    plots.curves_with_ci(shift_png, curves, "post - pre projection onto v",
                         "drift in the final-prompt projection under the neutral prompt (band: min-max over seeds, "
                         "descriptive)", styles=sty)
    plots.pre_post_bars(pre_post_png,
                        {c: ([r["pre_score"] for r in rows if r["condition"] == c],
                             [r["post_score"] for r in rows if r["condition"] == c]) for c in conds})
    main = relation.get("main_target", "drift_score")
    use = [r for r in rows if r.get("loss_reduction") is not None]  # the runs the relation is computed over
    label = "panel of test prompts, mean" if main == "drift_panel_score" else "neutral test prompt"
    plots.scatter_fit(align_png, [r["align_pre"] for r in use], [r[main] for r in use], [r["condition"] for r in use],
                      f"mean cos(-g, v) before training (layer {layer}, a_sum)", f"drift in trait score ({label})",
                      plots.relation_title(relation.get(f"align_pre~{main}"), relation.get(f"rank:align_pre~{main}"),
                                           relation.get(f"auroc:align_pre~{main}")), styles=sty)
    plots.projection_vs_score(layout.projection_vs_score_plot(steering), [r["drift_proj"] for r in rows],
                              [r["drift_score"] for r in rows], [r["condition"] for r in rows], layer,
                              "neutral test prompt", styles=sty)
