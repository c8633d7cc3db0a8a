"""Report generator: ``report.md`` and a self-contained ``report.html`` from a run folder's JSON.

Why generated, not hand-written: the conclusions must follow from the numbers by the rules
in :mod:`.alignment_rules` and :mod:`.drift_rules`, the same way on every run, so a reader can check each verdict
against the numbers printed next to it. Nothing is invented: stages whose files are absent
are reported as "not run". Both files come from one list of blocks, so they cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from nnsight_inoc.core.artifacts import read_json, write_text
from nnsight_inoc.core.layout import ALIGN_PLOTS, EXTRACT_PLOTS, RunLayout
from nnsight_inoc.models.cache import PRESETS
from nnsight_inoc.report import alignment_rules as R
from nnsight_inoc.report import drift_rules as DR
from nnsight_inoc.report.claims import all_verdicts
from nnsight_inoc.report.load import Run, drift_summary, load_run, steering_summary
from nnsight_inoc.report.render import Block, render_html, render_md
from nnsight_inoc.report.steering import section
from nnsight_inoc.report.verdicts import (
    ALPHA,
    MAX_LOSS_GAP_SHARE,
    fmt_p,
    layer_ranges,
    loss_gap_share,
)
from nnsight_inoc.stats.relation import MIN_GROUPS

CONTRASTS = ("inoc-neutral", "inoc-lossmatch", "lossmatch-neutral", "explicit-neutral")


def _ci(x: float, lo: float, hi: float, d: int = 4) -> str:
    return f"{x:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]"


def header(run: Run) -> list[Block]:
    """Reproduce command, cards, dates, commits, model: what a reader needs to rerun or trust the numbers."""
    p = run.provenance
    m = p["facts"]["model"]
    invocations = p.get("invocations") or [{"command": p["command"], "git": p["git"], "device": p["device"],
                                            "at": p["started"]}]

    def card(inv: Mapping[str, Any]) -> str:
        dev = inv.get("device") or {}
        return dev.get("cuda_device") or f"CPU ({dev.get('platform', '?')})"

    def commit(g: Mapping[str, Any] | None) -> str:
        g = g or {}
        return f"{g.get('commit')} (source: {g.get('source', 'git')}, dirty: {g.get('dirty')})"

    trait = run.extract["trait"]
    return [("h1", f"Inoculation and gradient alignment: trait {trait}, model {m['name']}"),
            ("p", "Reproduce the whole study (data, extract, align, finetune, drift, report) with the resolved config "
                  "saved beside this report (gpu/README.md runs the same stages on several GPUs):"),
            ("code", "python cli.py run --config config.toml --run-dir <new folder>"),
            ("ul", [f"Model: {m['name']} ({m['n_layers']} layers, d_model {m['d_model']}, {m['dtype']}), "
                    f"sha256 {m['sha256']}",
                    "Versions (last invocation): " + ", ".join(f"{k} {v}" for k, v in p["versions"].items()),
                    "Stages: " + ", ".join(f"{k} {s['seconds']:.0f} s" for k, s in p["stages"].items())]
             + [f"Invocation {i + 1}, {inv.get('at')}: `{inv['command']}` on {card(inv)}, commit {commit(inv.get('git'))}"
                for i, inv in enumerate(invocations)])]


def section_hypothesis(run: Run) -> list[Block]:
    """Why the cosine is the test statistic, stated before any number."""
    conds = run.align["conditions"]
    return [("h2", "1. Hypothesis and test statistic"),
            ("p", "Hypothesis: a training-time inoculation prompt that already asks for the trait makes the SFT "
                  "gradient push the model's activations less along the trait direction v, so finetuning on trait "
                  "data teaches less of the trait (less persona drift)."),
            ("p", f"Statistic: cos(-g, v) per example, layer and position ({run.align['sign_convention']}). "
                  "The cosine, not the loss or the gradient norm, is the test: a prompt that makes the data more "
                  "likely lowers the loss and shrinks the gradient in every direction at once, which says nothing "
                  "about where the step points. The cosine is scale-free and asks only about direction. Loss is "
                  "handled as a confound by a loss-matched prompt and by a regression on per-example loss."),
            ("p", f"Positions: final_prompt (last prompt token) and a_sum (sum of the gradients at the first "
                  f"{run.config['align']['n_assistant_tokens']} assistant tokens, where the SFT loss acts). "
                  "Training prompts (same examples, same order, under each):"),
            ("ul", [f"{c}: \"{d['system_prompt']}\" (n = {d['n']})" for c, d in conds.items()]),
            ("p", _sources_line(run.data_card))]


def section_direction(run: Run) -> list[Block]:
    """The direction must separate and monitor the trait before alignment with it means anything."""
    e = run.extract
    c, layer = e["chosen"], e["chosen"]["layer"]
    mon = e["monitoring"]["by_layer"][layer]
    checks = R.direction_checks(e)
    rows = [[k, f"{v:.4f}", f">= {t}", "pass" if ok else "FAIL"] for k, (v, t, ok) in checks.items()]
    beh = e["behaviour"]
    return [("h2", "2. Trait direction v and its sanity checks"),
            ("p", f"v(l) = mean(\"{e['promote']}\") - mean(\"{e['suppress']}\") over {e['n_direction_train']} "
                  f"prompts; checks on {e['n_direction_heldout']} held-out prompts. Chosen layer {layer} by rule "
                  f"'{e['layer_rule']}'."),
            ("table", ["check (layer %d)" % layer, "value", "threshold", "result"], rows),
            ("ul", [f"Held-out AUROC {c['auroc']:.4f}, Cohen's d {c['cohens_d']:.2f} (final prompt token)",
                    f"Monitoring Pearson r {mon['pearson_r']:.3f} [{mon['pearson_lo']:.3f}, {mon['pearson_hi']:.3f}], "
                    f"Spearman {mon['spearman_r']:.3f}, n = {mon['n']} ({e['monitoring']['n_unscored']} unscored)",
                    "Held-out behaviour, mean trait score promote / suppress: "
                    f"{beh['heldout/promote']['mean_score']:.3f} / {beh['heldout/suppress']['mean_score']:.3f}"])
            ] + _plots(run.layout.extract_dir / n for n in EXTRACT_PLOTS)


def _contrast_rows(align: dict[str, Any], contrast: str) -> list[list[str]]:
    layer, rows = int(align["layer"]), []
    for pos in R.POSITIONS:
        b = align["contrasts"][contrast][pos]
        passes = R.passing_layers(b)
        big = max(range(len(b["diff_cos"])), key=lambda i: abs(b["diff_cos"][i]))
        for tag, i in ((f"chosen {layer}", layer), (f"largest |diff| {big}", big)):
            rows.append([pos, tag, _ci(b["diff_cos"][i], b["lo"][i], b["hi"][i]), fmt_p(b["p_boot_holm"][i]),
                         fmt_p(b["null_p_exact_holm"][i]), f"{b['null_z'][i]:+.1f}",
                         f"{len(passes.away)} away ({layer_ranges(passes.away)}), "
                         f"{len(passes.toward)} toward ({layer_ranges(passes.toward)})"])
    return rows


def section_alignment(run: Run) -> list[Block]:
    """Main result with its three controls: loss-matched prompt, random-direction null, regression."""
    a, layer = run.align, int(run.align["layer"])
    out: list[Block] = [("h2", "3. Gradient alignment and controls"),
                        ("p", f"Paired contrasts in mean cos(-g, v) over the same examples ({a['n_bootstrap']} "
                              f"bootstrap draws; {a['null_note']}). A layer passes when both Holm-adjusted p < "
                              f"{ALPHA}. Negative = away from the trait.")]
    head = ["position", "layer", "diff [95% CI]", "p boot (Holm)", "p null exact (Holm)", "null z", "layers passing both"]
    for c in CONTRASTS:
        out += [("h3", c), ("table", head, _contrast_rows(a, c))]
    conds = a["conditions"]
    out += [("h3", "Loss per condition"),
            ("table", ["condition", "mean SFT loss [95% CI]", f"cos(-g,v) a_sum, layer {layer}"],
             [[c, f"{d['loss']['mean'][0]:.4f} [{d['loss']['lo'][0]:.4f}, {d['loss']['hi'][0]:.4f}]",
               f"{d['cos']['a_sum']['mean'][layer]:+.4f}"] for c, d in conds.items()])]
    lm, gap = run.lossmatch, a["contrasts"]["inoc-lossmatch"]["loss"]
    out += [("h3", "Loss match achieved"),
            ("ul", [f"Chosen trait-free prompt: \"{lm['chosen_prompt']}\" from a pool of {len(lm['pool'])} "
                    f"(max trait score {lm['max_trait_score']})",
                    f"Selection set ({lm['n_examples']} examples): gap {lm['chosen_gap']:+.4f} nats, "
                    f"{lm['gap_as_share_of_neutral_to_target']:.0%} of neutral-to-inoc",
                    f"Studied examples: inoc - lossmatch loss {_ci(gap['diff'], gap['lo'], gap['hi'])} nats = "
                    f"{loss_gap_share(a):.0%} of inoc - neutral "
                    f"({'complete' if loss_gap_share(a) <= MAX_LOSS_GAP_SHARE else 'INCOMPLETE'}; "
                    f"limit {MAX_LOSS_GAP_SHARE:.0%})"])]
    reg_rows = []
    for key, rows in a["regression"].items():
        r = rows[layer]
        reg_rows.append([key, _ci(r["coef_adjusted"], r["coef_adjusted_lo"], r["coef_adjusted_hi"]),
                         f"{r['coef_unadjusted']:+.4f}", fmt_p(r["coef_adjusted_p_holm"]),
                         f"{r['partial_r']:+.3f} [{r['partial_r_lo']:+.3f}, {r['partial_r_hi']:+.3f}]"])
    out += [("h3", f"Regression alignment ~ condition + z(loss) + z(log |g|), layer {layer}"),
            ("table", ["position/contrast", "adjusted coef [95% CI]", "unadjusted", "Holm p", "partial r [95% CI]"],
             reg_rows)]
    if run.precision is not None:
        pr = run.precision
        out += [("p", f"Precision check (bf16 autocast vs fp32, n = {pr['n']}): per-example max |d cos| "
                      f"{pr['abs_delta_cos_neutral']['max']:.4f} (neutral) / {pr['abs_delta_cos_inoc']['max']:.4f} "
                      f"(inoc); condition means within {pr['abs_delta_mean_cos_neutral']:.4f} / "
                      f"{pr['abs_delta_mean_cos_inoc']:.4f}. This run used {run.provenance['facts']['model']['dtype']}.")]
    else:
        out += [("p", "Precision check: not run (no precision_check.json).")]
    return out + _plots(run.layout.align_dir / n for n in ALIGN_PLOTS)


def section_drift(run: Run) -> list[Block]:
    """Drift is the outcome the alignment is meant to predict; until it exists, say so."""
    trained = run.layout.trained_runs()
    summ = drift_summary(run.dir)
    lines = [f"Finetuning: {len(trained)} finished run(s) (train.json)" if trained else "Finetuning: not run yet"]
    if summ is None:
        lines += ["Drift: not run yet", "Alignment-drift relation: not run yet"]
        return [("h2", "4. Drift and the alignment-drift relation"), ("ul", lines)]
    conds: dict[str, list[Mapping[str, Any]]] = {}
    for r in summ["rows"]:
        conds.setdefault(r["condition"], []).append(r)
    lines += _worker_lines(run.dir)
    if summ.get("not_run"):
        lines.append(f"Not run (the GPU campaign ran out of time; listed, not hidden): {len(summ['not_run'])} runs: "
                     + ", ".join(summ["not_run"]))
    rows = [[c, str(len(rs)), f"{_mean(rs, 'pre_score'):.3f}", f"{_mean(rs, 'post_score'):.3f}",
             f"{_mean(rs, 'drift_score'):+.3f}", f"{_mean(rs, 'drift_proj'):+.2f}", f"{_mean(rs, 'align_pre'):+.4f}",
             f"{_mean(rs, 'align_during'):+.4f}", _fmt(_mean(rs, 'loss_reduction'), "+.4f"),
             f"{_mean(rs, 'train_prompt_post_score'):.3f}"]
            for c, rs in conds.items()]
    blocks: list[Block] = [("h2", "4. Drift and the alignment-drift relation"), ("ul", lines),
                           ("p", "Means over seeds. Drift = post - pre under the neutral test prompt. cos(-g, v) is "
                                 f"the probe's mean at layer {summ['layer']}, summed assistant tokens, under the "
                                 "training prompt (> 0: a step moves activations toward the trait). Loss reduction = "
                                 "neutral's probe loss minus this prompt's, before training. The last column is the "
                                 "trait score after training when the training prompt is used at test time."),
                           ("table", ["condition", "seeds", "trait score pre", "post", "drift", f"projection drift "
                                      f"(layer {summ['layer']})", "cos(-g, v) before training", "cos during",
                                      "loss reduction", "trait under training prompt, post"], rows)]
    rel = summ.get("relation", {})
    relrows = [[k, *(f"{v[x]:+.2f}" for x in ("r", "lo", "hi")), str(v["n_runs"]), str(v["n_groups"])]
               if "error" not in v else [k, "n/a", "n/a", "n/a", v["error"], ""]
               for k, v in rel.items() if isinstance(v, dict)]
    if rel.get("n_runs_without_loss_reduction"):
        lines.append(f"{rel['n_runs_without_loss_reduction']} run(s) have no neutral run of their seed, hence no loss "
                     "reduction; they are left out of the correlations below")
    if relrows:
        blocks.append(("p", "Correlations across runs with a bootstrap over conditions (all seeds of a drawn "
                            "condition come along: runs of one prompt are not independent). '| loss_reduction' = "
                            "partial r, both sides residualised on the loss reduction (least squares)."))
        blocks.append(("table", ["predictor ~ drift", "r", "lo", "hi", "runs", "conditions"], relrows))
    corr = [[k, *(f"{v[x]:+.2f}" if isinstance(v.get(x), float) else "n/a"
                  for x in ("pearson_r", "pearson_lo", "pearson_hi", "spearman_r")), str(v.get("n", "n/a"))]
            for k, v in summ["correlations"].items()]
    blocks.append(("p", "The same with runs resampled as if independent (narrower; for reference):"))
    blocks.append(("table", ["predictor ~ drift", "Pearson r", "lo", "hi", "Spearman", "n"], corr))
    blocks += _plots(run.layout.drift_plots(steering=False))
    return blocks


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


def _fmt(x: float, spec: str) -> str:
    return "n/a" if x != x else format(x, spec)


def _mean(rows: list[Mapping[str, Any]], key: str) -> float:
    """Mean over seeds; NaN (shown as n/a) when any seed lacks the value, never a mean of a silent subset."""
    vals = [r.get(key) for r in rows]
    if not vals or any(v is None for v in vals):
        return float("nan")
    return sum(float(v) for v in vals) / len(vals)


def section_verdicts(run: Run) -> list[Block]:
    """Each claim with its label and the numbers that decided it (rules in :mod:`.alignment_rules`, :mod:`.drift_rules`)."""
    rules = (f"Rules: a layer passes when bootstrap-Holm and exact-null-Holm p < {ALPHA}; a position supports a "
             f"claim when the chosen layer or >= {R.MIN_LAYER_FRACTION:.0%} of layers pass away and none toward; "
             "significant layers of both signs (within or across positions a_sum, final_prompt) = inconclusive; "
             f"C2 at most inconclusive when the loss gap exceeds {MAX_LOSS_GAP_SHARE:.0%} of inoc - neutral; C3 "
             "uses the exact null alone; C4 needs the adjusted coefficient's CI below 0 with Holm p < "
             f"{ALPHA} at the chosen layer; C1-C4 at most inconclusive if the direction fails AUROC >= "
             f"{R.AUROC_MIN} or r >= {R.R_MIN}.")
    rules += (f" C5 and C8 need the difference below 0 for every one of >= {DR.MIN_SEEDS} paired seeds (C8 at most "
              "inconclusive with an incomplete loss match, as C2); C6 and C7 need the lower end of the r interval "
              f"(bootstrap over conditions) above 0 with >= {MIN_GROUPS} training prompts, and are not supported "
              f"when it lies below 0 or |r| < {DR.NEGLIGIBLE_R}. The answer below needs C5, C1 and C7.")
    out: list[Block] = [("h2", "5. Verdicts"), ("p", rules)]
    verdicts = all_verdicts(run.dir, run.extract, run.align)
    for cid, claim, (v, why) in verdicts:
        out.append(("verdict", cid, claim, v, why))
    label, sentence = DR.answer({cid: v for cid, _, (v, _) in verdicts})
    out.append(("verdict", "Answer", "Does inoculation reduce drift by rotating gradients away from v?", label, sentence))
    return out


def section_limitations(run: Run) -> list[Block]:
    """Stated plainly so a supported verdict is not read as more general than the run."""
    m = run.provenance["facts"]["model"]
    preset = PRESETS.get(m["name"])
    src = (f"dequantised to {m['dtype']} from a quantised GGUF ({preset.arch})" if preset
           else f"model source: {m['source']}")
    lines = [f"One model ({m['name']}, {m['n_layers']} layers, d_model {m['d_model']}), {src}; one model family.",
             f"One trait ({run.extract['trait']}); v from one promote/suppress pair.",
             f"One inoculation wording: \"{run.align['conditions']['inoc']['system_prompt']}\"."]
    share = loss_gap_share(run.align)
    if share > MAX_LOSS_GAP_SHARE:
        lines.append(f"Partial loss match: the loss-matched prompt leaves {share:.0%} of the inoc - neutral loss gap.")
    excl = run.provenance["facts"].get("sft_excluded")
    if excl is None:
        lines.append("provenance.json records no sft_excluded counts.")
    else:
        lines.append("SFT examples excluded: " + ", ".join(f"{k} {v}" for k, v in excl.items()))
    lines.append("Drift (the outcome) not measured in this run." if drift_summary(run.dir) is None
                 else "Drift rests on few seeds per condition and greedy answers to a fixed prompt set.")
    return [("h2", "6. Limitations"), ("ul", lines)]


def _plots(paths: Iterable[Path]) -> list[Block]:
    return [("img", p) for p in paths]


def build_blocks(run: Run) -> list[Block]:
    """The whole report, in section order."""
    return (header(run) + section_hypothesis(run) + section_direction(run) + section_alignment(run)
            + section_drift(run) + section_steering(run) + section_verdicts(run) + section_limitations(run))


def section_steering(run: Run) -> list[Block]:
    """Preventative steering vs inoculation (rules in :mod:`.steering`); 'not run' when absent."""
    summary = steering_summary(run.dir)
    blocks = section(summary)
    if summary is not None:  # the plots are written with the summary (stages.drift_summary)
        # The steering section leads with the alignment-vs-drift plot (the prompt section ends with it).
        blocks += _plots(reversed(run.layout.drift_plots(steering=True)))
    return blocks


def write_report(run_dir: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write report.md and report.html into out_dir (default run_dir), atomically; returns both paths."""
    run_dir = Path(run_dir)
    out_dir = run_dir if out_dir is None else Path(out_dir)
    blocks = build_blocks(load_run(run_dir))
    out = RunLayout(out_dir)
    md, htm = out.report_md, out.report_html
    write_text(md, render_md(blocks, out_dir))
    write_text(htm, render_html(blocks))
    return md, htm


def _sources_line(card: dict) -> str:
    """One line on where the prompts came from; says so plainly when the card records no sources."""
    sources = card.get("sources")
    if not sources:
        return "Data sources: not recorded in the data card (splits supplied directly)."
    return "Data sources: " + "; ".join(
        f"{s['name']} ({s['role']}, kept {s['kept']} of {s['raw']})" for s in sources
    ) + "."
