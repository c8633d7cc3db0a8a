"""Report sections on drift: the per-condition table, the paired contrasts at the unit of replication (issue 22:
what the drift verdicts read), the panel of test prompts, the alignment-drift relation (linear, rank and AUROC
summaries, collinearity) and the transfer ranking.

The panel, transfer and loss-split parts appear when the drift summary has them; a summary from before
issue 16 reads as before, with the rank/AUROC/collinearity entries the loader adds from its rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from nnsight_inoc.core.artifacts import read_json
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.report.contrast_rules import contrasts
from nnsight_inoc.report.drift_rules import main_drift
from nnsight_inoc.report.figures_run import DRIFT_FIGURES
from nnsight_inoc.report.intervals_fmt import SCORE_DIFF_RANGE, fmt_est
from nnsight_inoc.report.load import Run, drift_summary
from nnsight_inoc.report.render import Block
from nnsight_inoc.stats.intervals import CI_LEVEL, mean_ci
from nnsight_inoc.stats.relation import DESIGN_MAX_COLLINEARITY, HIGH_DRIFT_SHARE

TITLE = "4. Drift and the alignment-drift relation"
FORMATS = {"drift_panel_score": "+.3f", "loss_reduction_trait": "+.4f", "loss_reduction_content": "+.4f",
           "transfer": "+.4g"}


def _fmt(x: float, spec: str) -> str:
    return "n/a" if x != x else format(x, spec)


def _mean(rows: list[Mapping[str, Any]], key: str) -> float:
    """Mean over seeds; NaN (shown as n/a) when any seed lacks the value, never a mean of a silent subset."""
    vals = [r.get(key) for r in rows]
    if not vals or any(v is None for v in vals):
        return float("nan")
    return sum(float(v) for v in vals) / len(vals)


def _plots(paths: Iterable[Path]) -> list[Block]:
    return [("img", p) for p in paths]


def section_drift(run: Run) -> list[Block]:
    """Drift is the outcome the alignment is meant to predict; until it exists, say so."""
    trained = run.layout.trained_runs()
    summ = drift_summary(run.dir)
    lines = [f"Finetuning: {len(trained)} finished run(s) (train.json)" if trained else "Finetuning: not run yet"]
    if summ is None:
        lines += ["Drift: not run yet", "Alignment-drift relation: not run yet"]
        return [("h2", TITLE), ("ul", lines)]
    conds: dict[str, list[Mapping[str, Any]]] = {}
    for r in summ["rows"]:
        conds.setdefault(r["condition"], []).append(r)
    lines += _worker_lines(run.dir)
    if summ.get("not_run"):
        lines.append(f"Not run (the GPU campaign ran out of time; listed, not hidden): {len(summ['not_run'])} runs: "
                     + ", ".join(summ["not_run"]))
    rel = summ.get("relation", {})
    if rel.get("n_runs_without_loss_reduction"):
        lines.append(f"{rel['n_runs_without_loss_reduction']} run(s) have no neutral run of their seed, hence no loss "
                     "reduction; they are left out of the correlations below")
    extra = [k for k in ("drift_panel_score", "loss_reduction_trait", "loss_reduction_content", "transfer")
             if any(r.get(k) is not None for r in summ["rows"])]
    names = {"drift_panel_score": "drift, panel mean", "loss_reduction_trait": "loss reduction: trait",
             "loss_reduction_content": "loss reduction: content", "transfer": "transfer (inner product)"}
    rows = [[c, str(len(rs)), f"{_mean(rs, 'pre_score'):.3f}", f"{_mean(rs, 'post_score'):.3f}",
             f"{_mean(rs, 'drift_score'):+.3f}", f"{_mean(rs, 'drift_proj'):+.2f}", f"{_mean(rs, 'align_pre'):+.4f}",
             f"{_mean(rs, 'align_during'):+.4f}", _fmt(_mean(rs, 'loss_reduction'), "+.4f"),
             *[_fmt(_mean(rs, k), FORMATS[k]) for k in extra], f"{_mean(rs, 'train_prompt_post_score'):.3f}"]
            for c, rs in conds.items()]
    blocks: list[Block] = [
        ("h2", TITLE), ("ul", lines),
        ("p", "Means over seeds. Drift = post - pre under the neutral test prompt (and, where measured, the mean over "
              f"the panel of trait-free test prompts). cos(-g, v) is the probe's mean at layer {summ['layer']}, summed "
              "assistant tokens, under the training prompt (> 0: a step moves activations toward the trait). Loss "
              "reduction = neutral's probe loss minus this prompt's, before training (same seed). The last column is "
              "the trait score after training when the training prompt is used at test time."),
        ("table", ["condition", "seeds", "trait score pre", "post", "drift", f"projection drift (layer {summ['layer']})",
                   "cos(-g, v) before training", "cos during", "loss reduction", *[names[k] for k in extra],
                   "trait under training prompt, post"], rows)]
    blocks += section_contrasts(summ) + section_panel(summ) + section_relation(summ) + section_transfer(summ)
    blocks += _plots(run.layout.drift_plots(steering=False)) + _plots([run.layout.projection_vs_score_plot(False)])
    figs = [run.layout.finetune_dir / n for n in DRIFT_FIGURES]  # report/figures_run.py, when drawn
    return blocks + _plots([p for p in figs if p.is_file()])


def section_drift_main(run: Run) -> list[Block]:
    """Whether drift ran, and the paired contrasts the verdicts read; the per-condition table, the panel, the
    relation and the plots are in the appendix."""
    trained = run.layout.trained_runs()
    summ = drift_summary(run.dir)
    lines = [f"Finetuning: {len(trained)} finished run(s) (train.json)" if trained else "Finetuning: not run yet"]
    if summ is None:
        return [("h2", TITLE), ("ul", lines + ["Drift: not run yet", "Alignment-drift relation: not run yet"])]
    lines.append(f"Drift: {len(summ['rows'])} run(s) measured; per condition, the panel, the alignment-drift "
                 "relation and transfer are in the appendix")
    if summ.get("not_run"):
        lines.append(f"Not run (listed, not hidden): {len(summ['not_run'])} runs: " + ", ".join(summ["not_run"]))
    return [("h2", TITLE), ("ul", lines)] + section_contrasts(summ)


def _cell(x: Any, spec: str = "+.3f") -> str:
    return "n/a" if x is None or x != x else format(x, spec)


def _est(b: Mapping[str, Any]) -> str:
    """A drift contrast's mean [t-interval], clipped to [-1, 1] with a note, never an estimate outside it."""
    f = [float("nan") if b.get(k) is None else float(b[k]) for k in ("estimate", "lo", "hi")]
    return fmt_est(*f, d=3, bounds=SCORE_DIFF_RANGE)


def section_contrasts(summ: Mapping[str, Any]) -> list[Block]:
    """The paired drift contrasts the verdicts read (C5, C8-C11): per-seed differences of each run's main drift,
    their mean with a t-interval over seeds, the exact sign-flip p, the seeds. From the summary's ``contrasts``
    block; a summary from before issue 22 gets them computed here from its rows (the same function)."""
    blk = summ.get("contrasts")
    added = blk is None
    if added:
        blk = contrasts(summ["rows"], main_drift(summ))
    if not blk["pairs"]:
        return []
    rows = [[k, ", ".join(_cell(d) for d in b["per_seed"]) or "-",
             _est(b), _cell(b["sign_flip_p"], ".3f"),
             str(b["n_seeds"])] for k, b in blk["pairs"].items()]
    measure = ("the mean over the panel's test prompts within each run" if blk["measure"] == "drift_panel_score"
               else "the neutral test prompt's drift")
    return [("h3", "Paired drift contrasts at the unit of replication (what the drift verdicts read)"),
            ("p", f"Each run is one trained model; its drift is {measure}. a - b per seed (same seed: same batches, "
                  f"step order and LoRA initialisation), then the mean over seeds with a {CI_LEVEL:.0%} t-interval "
                  "over seeds; panel test prompts are test conditions, never replicates. The exact sign-flip p is "
                  f"description (0.25 at best with 3 seeds). Negligible band +-{blk['negligible_drift']} trait score."
                  + (" Computed by the report from the summary's rows (the summary predates this block)."
                     if added else "")),
            ("table", ["contrast a - b", "per seed", f"mean [{CI_LEVEL:.0%} t-interval over seeds]",
                       "sign-flip p", "seeds"], rows)]


def section_panel(summ: Mapping[str, Any]) -> list[Block]:
    """Drift under the panel of test prompts (the main drift measure) beside the neutral test prompt's."""
    title: Block = ("h3", "Drift under a panel of test prompts")
    panel = summ.get("panel")
    if panel is None:
        return [title, ("p", "Not measured in this run: drift was measured under the neutral test prompt only, which "
                             "is also the neutral training prompt, so every other training prompt is also a change of "
                             "context between training and test. The verdicts use the neutral test prompt's drift.")]
    rows = []
    for c, b in panel["by_condition"].items():
        neutral = mean_ci([r["drift_score"] for r in summ["rows"] if r["condition"] == c])
        vs = panel["contrasts"].get(f"{c}-neutral", {})
        rows.append([c, f"{b['mean']:+.3f} [{b['lo']:+.3f}, {b['hi']:+.3f}]",
                     f"{vs['mean']:+.3f} [{vs['lo']:+.3f}, {vs['hi']:+.3f}]" if "mean" in vs else "-",
                     f"{neutral[0]:+.3f}" + (f" [{neutral[1]:+.3f}, {neutral[2]:+.3f}]" if neutral[1] == neutral[1] else ""),
                     str(b["n_rows"])])
    other = [[k, f"{v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]" if "mean" in v else v.get("error", "")]
             for k, v in panel["contrasts"].items() if not k.endswith("-neutral")]
    blocks: list[Block] = [
        title, ("p", f"{len(panel['prompts'])} trait-free test prompts never used in training (description: the "
                     "crossed interval below treats the prompts as if replicates, so no verdict reads it): "
                     + "; ".join(f'"{p}"' for p in panel["prompts"]) + f". Interval: {panel['method']}. The neutral "
                     f"test prompt's drift is shown beside it ({CI_LEVEL:.0%} t-interval over seeds)."),
        ("table", ["condition", "panel drift [CI]", "minus neutral's, paired [CI]", "neutral test prompt drift [CI]",
                   "seeds"], rows)]
    if other:
        blocks.append(("table", ["paired contrast (panel)", "difference [CI]"], other))
    return blocks


def _rel_cell(v: Mapping[str, Any]) -> list[str]:
    if "error" in v:
        return ["n/a", "n/a", "n/a", v["error"], ""]
    if "auroc" in v:
        return [f"{v['auroc']:.2f}", f"{v['lo']:.2f}", f"{v['hi']:.2f}", f"{v['n_high']} + {v['n_low']} prompts",
                str(v["n_groups"])]
    return [f"{v['r']:+.2f}", f"{v['lo']:+.2f}", f"{v['hi']:+.2f}", str(v["n_runs"]), str(v["n_groups"])]


def section_relation(summ: Mapping[str, Any]) -> list[Block]:
    """The correlations with a bootstrap over conditions, the rank and AUROC summaries, and collinearity."""
    rel = summ.get("relation", {})
    target = main_drift(summ)
    skip = ("collinearity", "transfer_ranking")
    entries = {k: v for k, v in rel.items() if isinstance(v, dict) and k not in skip}
    undefined = {k: v["error"] for k, v in entries.items() if "error" in v}
    relrows = [[k, *_rel_cell(v)] for k, v in entries.items() if "error" not in v]
    blocks: list[Block] = []
    if undefined:
        blocks.append(("p", undefined_sentence(undefined, "predictor ~ drift relations")))
    if relrows:
        blocks += [("h3", "Alignment, loss reduction and drift across training prompts"),
                   ("p", f"Main drift measure: {target}. Correlations across runs with a bootstrap over conditions (all "
                         "seeds of a drawn condition come along: runs of one prompt are not independent). '| x' = "
                         "partial r, both sides residualised on x (least squares; loss_split = both parts of the loss "
                         "reduction). 'rank:' = the same on ranks. 'auroc:' = over training prompts, how well the "
                         f"predictor separates prompts that kept >= {HIGH_DRIFT_SHARE:.0%} of the neutral prompt's drift "
                         "from the rest (0.5 none, 1 perfect, below 0.5 the other way); drift is near 0 or near its "
                         "ceiling for most prompts, which a linear r summarises poorly."
                         + (f" Entries added by the report from the summary's rows (it predates them): "
                            f"{len(rel['added_by_report'])}." if rel.get("added_by_report") else "")),
                   ("table", ["predictor ~ drift", "r / AUROC", "lo", "hi", "runs", "conditions"], relrows)]
    col = rel.get("collinearity")
    if col and col.get("max_abs_r") is not None:
        parts = [f"r(alignment, loss reduction) across the whole set {col['r_loss_reduction']:+.3f}"]
        if col.get("multiple_r_loss_split") is not None:
            parts.append(f"multiple r of alignment on (trait part, content part) {col['multiple_r_loss_split']:.3f}")
        blocks.append(("p", "Collinearity (issue 16 acceptance: |r| <= "
                            f"{DESIGN_MAX_COLLINEARITY} at the reporting layer, so that the partial correlations mean "
                            f"something): {'; '.join(parts)}: acceptance "
                            f"{'met' if col['meets_acceptance'] else 'NOT met'}; above {col['cap_abs_r']} the partial-r "
                            "verdict is capped."))
    defined = {k: v for k, v in summ["correlations"].items() if isinstance(v.get("pearson_r"), float)
               and v["pearson_r"] == v["pearson_r"]}
    corr = [[k, *(f"{v[x]:+.2f}" if isinstance(v.get(x), float) else "n/a"
                  for x in ("pearson_r", "pearson_lo", "pearson_hi", "spearman_r")), str(v.get("n", "n/a"))]
            for k, v in defined.items()]
    missing = {k: v.get("error", "correlation undefined") for k, v in summ["correlations"].items() if k not in defined}
    if corr:
        blocks.append(("p", "The same with runs resampled as if independent (narrower; for reference):"))
        blocks.append(("table", ["predictor ~ drift", "Pearson r", "lo", "hi", "Spearman", "n"], corr))
    if missing:
        blocks.append(("p", undefined_sentence(missing, "correlations with runs resampled as if independent")))
    return blocks


def undefined_sentence(errors: Mapping[str, Any], what: str) -> str:
    """One sentence for every undefined entry instead of a row of n/a each: how many, why (each distinct reason
    once, with how many it covers) and which."""
    reasons: dict[str, list[str]] = {}
    for k, e in errors.items():
        reasons.setdefault(str(e) if isinstance(e, str) else "undefined", []).append(k)
    why = "; ".join(f"{r} ({len(ks)})" for r, ks in reasons.items())
    return (f"{len(errors)} {what} are undefined and not tabulated: {why}. They are: {', '.join(errors)}.")


def section_transfer(summ: Mapping[str, Any]) -> list[Block]:
    """Cross-context transfer: does it rank the training prompts by drift better than alignment?"""
    title: Block = ("h3", "Cross-context transfer vs alignment as predictors of drift")
    tr = summ.get("relation", {}).get("transfer_ranking")
    if tr is None:
        return [title, ("p", "Not measured in this run (no transfer/transfer.json).")]
    if "error" in tr:
        return [title, ("p", f"Transfer ranking not computable: {tr['error']}")]
    words = ("transfer ranks the prompts better" if tr["diff_lo"] > 0 else
             "alignment ranks the prompts better" if tr["diff_hi"] < 0 else "no clear difference (CI includes 0)")
    return [title, ("p", f"Over {tr['n']} training prompts (means over seeds), Spearman r with {tr['target']}, 95% "
                         "bootstrap CIs over prompts (one resampling for both, so the difference is paired). Transfer "
                         "= the inner product of the LoRA-parameter gradients of the training loss under the prompt and "
                         "of the trait's log-probability under the neutral test prompt, before training."),
            ("table", ["predictor", "Spearman r [CI]"],
             [["transfer", f"{tr['r_a']:+.2f} [{tr['lo_a']:+.2f}, {tr['hi_a']:+.2f}]"],
              ["alignment (cos before training)", f"{tr['r_b']:+.2f} [{tr['lo_b']:+.2f}, {tr['hi_b']:+.2f}]"],
              ["transfer - alignment", f"{tr['diff']:+.2f} [{tr['diff_lo']:+.2f}, {tr['diff_hi']:+.2f}]"]]),
            ("p", f"Answer: {words}.")]


def _worker_lines(run_dir: Path) -> list[str]:
    """Where and how the finetune runs were made: parallel workers' provenance files and train.json wall times."""
    seen: dict[tuple[str, str, str], int] = {}
    for path in RunLayout(run_dir).worker_provenances():
        p = read_json(path)
        k = (p["command"], p["device"].get("cuda_device") or "CPU", p["git"]["commit"])
        seen[k] = seen.get(k, 0) + 1
    out = [f"{n} parallel worker(s) (provenance.worker*.json), last command `{c}` on {d}, commit {g}"
           for (c, d, g), n in seen.items()]
    walls = sorted(read_json(t)["wall_s"] for t in RunLayout(run_dir).trained_runs())
    if walls:
        out.append(f"Training wall time per run (train.json): median {walls[len(walls) // 2]:.0f} s, "
                   f"range {walls[0]:.0f}-{walls[-1]:.0f} s")
    return out
