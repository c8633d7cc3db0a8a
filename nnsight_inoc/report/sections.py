"""Report generator: ``report.md`` and a self-contained ``report.html`` from a run folder's JSON.

Why generated, not hand-written: the conclusions must follow from the numbers by the rules
in :mod:`.alignment_rules`, :mod:`.drift_rules` and :mod:`.causal_rules`, the same way on every run, so a reader can check each verdict
against the numbers printed next to it. Nothing is invented: stages whose files are absent
are reported as "not run". Both files come from one list of blocks, so they cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from nnsight_inoc.core.artifacts import write_text
from nnsight_inoc.core.layout import ALIGN_PLOTS, EXTRACT_PLOTS, REPORT_APPENDIX_MD, RunLayout, null_plot
from nnsight_inoc.models.cache import PRESETS
from nnsight_inoc.report import alignment_rules as R
from nnsight_inoc.report import contrast_rules as CR
from nnsight_inoc.report import drift_rules as DR
from nnsight_inoc.report.answer import REQUIRED, answer
from nnsight_inoc.report.claims import all_verdicts
from nnsight_inoc.report.conditions_section import section_conditions
from nnsight_inoc.report.controls import prompt_label
from nnsight_inoc.report.drift_sections import section_drift, section_drift_main
from nnsight_inoc.report.figures_run import ALIGN_FIGURES
from nnsight_inoc.report.intervals_fmt import fmt_share
from nnsight_inoc.report.lead import QUESTION, section_lead, smoke_label
from nnsight_inoc.report.leak_sections import section_leak_shift, section_structured_null
from nnsight_inoc.report.load import Run, drift_summary, load_run, steering_summary
from nnsight_inoc.report.loss_sections import (
    section_control_c,
    section_leak_match,
    section_legacy_regression,
    section_loss_split,
)
from nnsight_inoc.report.render import Block, render_html, render_md
from nnsight_inoc.report.smoke import smoke_line
from nnsight_inoc.report.steering import section
from nnsight_inoc.report.verdicts import (
    ALPHA,
    MAX_LOSS_GAP_SHARE,
    control_of,
    fmt_p,
    layer_ranges,
    loss_gap_share,
    loss_gap_words,
)
from nnsight_inoc.stats.intervals import CI_LEVEL
from nnsight_inoc.stats.pairing import min_sign_flip_p
from nnsight_inoc.stats.relation import MAX_COLLINEARITY, MIN_GROUPS


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

    return [("h2", "Provenance"),
            ("p", "Reproduce the whole study (data, extract, align, finetune, drift, report) with the resolved config "
                  "saved beside this report (gpu/README.md runs the same stages on several GPUs):"),
            ("code", "python cli.py run --config config.toml --run-dir <new folder>"),
            ("ul", [f"Model: {m['name']} ({m['n_layers']} layers, d_model {m['d_model']}, {m['dtype']}), "
                    f"sha256 {m['sha256']}",
                    "Versions (last invocation): " + ", ".join(f"{k} {v}" for k, v in p["versions"].items()),
                    "Stages: " + ", ".join(f"{k} {s['seconds']:.0f} s" for k, s in p["stages"].items())]
             + [f"Invocation {i + 1}, {inv.get('at')}: `{inv['command']}` on {card(inv)}, commit {commit(inv.get('git'))}"
                for i, inv in enumerate(invocations)])]


def title(run: Run) -> list[Block]:
    """The title and, for a smoke run (:mod:`.smoke`), the one line saying its numbers mean nothing."""
    m = run.provenance["facts"]["model"]
    out: list[Block] = [("h1", f"Inoculation and gradient alignment: trait {run.extract['trait']}, model {m['name']}")]
    line = smoke_line(run.config)
    return out + ([("p", line)] if line else [])


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
                  f"{len(conds)} training prompts, {next(iter(conds.values()))['n']} SFT examples each (the table "
                  "above shows each prompt)."),
            ("p", _sources_line(run.data_card))]


def section_direction(run: Run) -> list[Block]:
    """The direction must separate and monitor the trait before alignment with it means anything."""
    e = run.extract
    c, layer = e["chosen"], e["chosen"]["layer"]
    mon = e["monitoring"]["by_layer"][layer]
    checks = R.direction_checks(e)
    rows = [[k, f"{v:.4f}", f">= {t}", "pass" if ok else "FAIL"] for k, (v, t, ok) in checks.items()]
    within = run.monitoring_within or {"error": "not computed"}
    w = within.get("chosen", within)
    if "r" in w:
        rows.append(["monitoring r within prompts (reported, does not gate)", f"{w['r']:.4f}", f">= {R.R_MIN}",
                     "pass" if w["r"] >= R.R_MIN else "below"])
    within_line = (f"Monitoring r within system prompts (each prompt's mean removed): {w['r']:.3f} "
                   f"[{w['lo']:.3f}, {w['hi']:.3f}] (bootstrap over {w['n_groups']} prompts); per prompt "
                   + ", ".join("n/a" if x is None or x != x else f"{x:+.2f}" for x in w["r_by_group"])
                   + f". The pooled r mostly compares the prompts. Source: {within.get('source', 'extract summary')}."
                   if "r" in w else f"Monitoring r within system prompts: not computable ({w.get('error')}).")
    beh = e["behaviour"]
    return [("h2", "2. Trait direction v and its sanity checks"),
            ("p", f"v(l) = mean(\"{e['promote']}\") - mean(\"{e['suppress']}\") over {e['n_direction_train']} "
                  f"prompts; checks on {e['n_direction_heldout']} held-out prompts. Chosen layer {layer} by rule "
                  f"'{e['layer_rule']}'."),
            ("table", ["check (layer %d)" % layer, "value", "threshold", "result"], rows),
            ("ul", [f"Held-out AUROC {c['auroc']:.4f}, Cohen's d {c['cohens_d']:.2f} (final prompt token)",
                    f"Monitoring Pearson r {mon['pearson_r']:.3f} [{mon['pearson_lo']:.3f}, {mon['pearson_hi']:.3f}], "
                    f"Spearman {mon['spearman_r']:.3f}, n = {mon['n']} ({e['monitoring']['n_unscored']} unscored); "
                    f"the issue-3 threshold (>= {R.R_MIN}) applies to this pooled r",
                    within_line,
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
            rows.append([pos, tag, _ci(b["diff_cos"][i], b["lo"][i], b["hi"][i]),
                         f"{fmt_p(b['p_boot'][i])} / {fmt_p(b['null_p_exact'][i])}", fmt_p(b["p_boot_holm"][i]),
                         fmt_p(b["null_p_exact_holm"][i]), f"{b['null_z'][i]:+.1f}",
                         f"{len(passes.away)} away ({layer_ranges(passes.away)}), "
                         f"{len(passes.toward)} toward ({layer_ranges(passes.toward)})"])
    return rows


def section_alignment(run: Run) -> list[Block]:
    """Main result with its three controls: loss-matched prompt, random-direction null, regression."""
    a, layer = run.align, int(run.align["layer"])
    out: list[Block] = [("h2", "3. Gradient alignment and controls"),
                        ("p", f"Paired contrasts in mean cos(-g, v) over the same examples ({a['n_bootstrap']} "
                              f"bootstrap draws; {a['null_note']}). The verdicts read one pre-specified test: the "
                              f"chosen layer {layer} at {R.REPORT_POSITION}, unadjusted. Across layers (description) "
                              f"a layer passes when both Holm-adjusted p < {ALPHA}. Negative = away from the trait.")]
    head = ["position", "layer", "diff [95% CI]", "p boot / null, unadjusted (the verdict's, at the chosen layer)",
            "p boot (Holm)", "p null exact (Holm)", "null z", "layers passing both (Holm; description)"]
    for c in a["contrasts"]:
        out += [("h3", c), ("table", head, _contrast_rows(a, c))]
    out += _loss_blocks(run)
    out += section_loss_split(run) + section_leak_match(run) + section_leak_shift(a) + section_structured_null(a)
    out += section_control_c(run)
    out += section_legacy_regression(a)
    if run.precision is not None:
        pr = run.precision
        out += [("p", f"Precision check (bf16 autocast vs fp32, n = {pr['n']}): per-example max |d cos| "
                      f"{pr['abs_delta_cos_neutral']['max']:.4f} (neutral) / {pr['abs_delta_cos_inoc']['max']:.4f} "
                      f"(inoc); condition means within {pr['abs_delta_mean_cos_neutral']:.4f} / "
                      f"{pr['abs_delta_mean_cos_inoc']:.4f}. This run used {run.provenance['facts']['model']['dtype']}.")]
    else:
        out += [("p", "Precision check: not run (no precision_check.json).")]
    extra = [run.layout.align_dir / null_plot("inoc", c, p) for c in a["conditions"] if c.startswith("leak_")
             for p in ("a_sum", "final_prompt")]
    extra += [run.layout.align_dir / n for n in ALIGN_FIGURES]  # report/figures_run.py, when their inputs existed
    return out + _plots([run.layout.align_dir / n for n in ALIGN_PLOTS] + [p for p in extra if p.is_file()])


def section_alignment_main(run: Run) -> list[Block]:
    """The alignment contrasts at the reporting layer and position only, and the loss match (the appendix has
    every layer, position and control)."""
    a, layer = run.align, int(run.align["layer"])
    rows = []
    for c in a["contrasts"]:
        b = a["contrasts"][c][R.REPORT_POSITION]
        passes = R.passing_layers(b)
        rows.append([c, _ci(b["diff_cos"][layer], b["lo"][layer], b["hi"][layer]),
                     f"{fmt_p(b['p_boot'][layer])} / {fmt_p(b['null_p_exact'][layer])}",
                     f"{len(passes.away)} away, {len(passes.toward)} toward (of {len(b['diff_cos'])})"])
    return [("h2", "3. Gradient alignment and controls"),
            ("p", f"Paired contrasts in mean cos(-g, v) over the same examples, at the reporting layer {layer} and "
                  f"{R.REPORT_POSITION} (fixed before any contrast was seen; negative = away from the trait). Every "
                  "layer and position, the loss split, the content-leak match, control C and the plots are in the "
                  "appendix."),
            ("table", ["contrast", f"diff [95% CI], layer {layer}", "p boot / null (unadjusted)",
                       "layers passing both (Holm; description)"], rows)] + _loss_blocks(run)


def _loss_blocks(run: Run) -> list[Block]:
    a, layer = run.align, int(run.align["layer"])
    conds = a["conditions"]
    out: list[Block] = [("h3", "Loss per condition"),
            ("table", ["condition", "mean SFT loss [95% CI]", f"cos(-g,v) a_sum, layer {layer}"],
             [[c, f"{d['loss']['mean'][0]:.4f} [{d['loss']['lo'][0]:.4f}, {d['loss']['hi'][0]:.4f}]",
               f"{d['cos']['a_sum']['mean'][layer]:+.4f}"] for c, d in conds.items()])]
    lm, gap = run.lossmatch, a["contrasts"]["inoc-lossmatch"]["loss"]
    out += [("h3", "Loss match achieved"),
            ("ul", [f"Chosen trait-free prompt: \"{lm['chosen_prompt']}\" from a pool of {len(lm['pool'])} "
                    f"(max trait score {lm['max_trait_score']})",
                    f"Selection set ({lm['n_examples']} examples): gap {lm['chosen_gap']:+.4f} nats, "
                    f"{_selection_share(lm)} of neutral-to-inoc",
                    f"Studied examples: inoc - lossmatch loss {_ci(gap['diff'], gap['lo'], gap['hi'])} nats = "
                    f"{_gap_words(a)} "
                    f"({'complete' if loss_gap_share(a, 'lossmatch') <= MAX_LOSS_GAP_SHARE else 'INCOMPLETE'}; "
                    f"limit {MAX_LOSS_GAP_SHARE:.0%})",
                    f"The loss-matched comparison (C2, C8) uses: {control_of(a)}"])]
    return out


def _gap_words(align: Mapping[str, Any], control: str = "lossmatch") -> str:
    """'25% of inoc - neutral', or both losses when inoc - neutral is near zero (:func:`loss_gap_words`)."""
    return f"{loss_gap_words(align, control)} of inoc - neutral"


def _selection_share(lm: Mapping[str, Any]) -> str:
    """lossmatch.json's gap as a share of neutral-to-target, through :func:`.intervals_fmt.fmt_share` (no
    percentage of a near-zero denominator)."""
    share, gap = lm["gap_as_share_of_neutral_to_target"], lm["chosen_gap"]
    return fmt_share(gap, gap / share if share else float("nan"), "nats of neutral-to-inoc")


def section_verdicts(run: Run) -> list[Block]:
    """Each claim with its label and the numbers that decided it (rules in :mod:`.alignment_rules`,
    :mod:`.drift_rules`, :mod:`.causal_rules`), then the answer (:mod:`.answer`)."""
    rules = (f"Rules (issue 16): C1-C4 are judged at one layer and position fixed by rule before any contrast is "
             f"seen: extract's reporting layer (chosen by held-out AUROC, then monitoring r) and {R.REPORT_POSITION} "
             "(the assistant tokens that carry the SFT loss); every layer and the final prompt token are shown as "
             f"description. C1: the inoc - neutral difference and its bootstrap CI below 0, exact random-direction "
             f"null p < {ALPHA}, and (issue 22, when measured) |change along v| above that along every other trait's "
             "direction and every leading principal component of the neutral gradients, and inoc - each trait-free "
             "prompt away from 0 on the same side (else inconclusive, naming what beat v). C2: the same sphere rule "
             "on inoc - the loss-matched control (the content leak leak_inoc when measured, read at b_sum beyond the "
             "longest quote when measured, else the pool prompt), at most inconclusive when the control leaves more "
             f"than {MAX_LOSS_GAP_SHARE:.0%} of the inoc - neutral loss gap. C3: the null alone. C4: inoc's change in "
             "alignment at zero change in loss, per example (control C), CI below 0. C1-C4 at most inconclusive if "
             f"the direction fails AUROC >= {R.AUROC_MIN} or pooled monitoring r >= {R.R_MIN}.")
    rules += (" Drift rules (pre-registered in issue 22, before any sweep): every drift contrast a - b is read at "
              "the unit of replication, the trained model: each run's main drift (the mean over the panel's test "
              "prompts when measured, else the neutral test prompt's), paired by seed, mean of the per-seed "
              f"differences with a {CI_LEVEL:.0%} t-interval over >= {CR.MIN_SEEDS} seeds (panel prompts are test "
              "conditions, never replicates). Supported only when the interval excludes 0 in the predicted "
              f"direction AND the estimate lies beyond +-{CR.NEGLIGIBLE_DRIFT}; not supported when the whole "
              "interval lies inside that band or beyond 0 the other way; otherwise inconclusive, naming how far it "
              "fell short. Seed agreement and the exact sign-flip p are reported, never a test: with 3 seeds it "
              f"cannot go below {min_sign_flip_p(3):.2f}. C5: inoc - neutral < 0. C8: inoc - the loss-matched "
              "control < 0, at most inconclusive with an incomplete loss match, as C2. C9 (sufficiency): zero_v - "
              "neutral < 0 and zero_v - zero_rand < 0. C10 (necessity): restore_v - inoc > 0. C11 (factorial): "
              "inoc_leak_X - leak_X < 0 for each X, labelled by X = inoc. C6 and C7 are correlational description "
              "and outside the answer: they need the lower end of the r interval (bootstrap over conditions) above 0 "
              f"with >= {MIN_GROUPS} training prompts, and are not supported when it lies below 0 or |r| < "
              f"{DR.NEGLIGIBLE_R}; C7 controls for both parts of the loss reduction when measured, and is at most "
              f"inconclusive when alignment and the loss reduction are collinear (|r| > {MAX_COLLINEARITY}). A capped "
              f"verdict states its uncapped verdict. The answer needs {', '.join(REQUIRED)}: not supported when C5 "
              "is, or C9 or C10 is; when inconclusive it names what fell short.")
    out: list[Block] = [("h2", "5. Verdicts"), ("p", rules)]
    verdicts = all_verdicts(run.dir, run.extract, run.align, run.example)
    for cid, claim, (v, why) in verdicts:
        out.append(("verdict", cid, claim, smoke_label(v, run.config), why))
    label, sentence = answer({cid: v for cid, _, v in verdicts})
    out.append(("verdict", "Answer", QUESTION, smoke_label(label, run.config), sentence))
    return out


def section_limitations(run: Run) -> list[Block]:
    """Stated plainly so a supported verdict is not read as more general than the run."""
    m = run.provenance["facts"]["model"]
    preset = PRESETS.get(m["name"])
    src = (f"dequantised to {m['dtype']} from a quantised GGUF ({preset.arch})" if preset
           else f"model source: {m['source']}")
    lines = [f"One model ({m['name']}, {m['n_layers']} layers, d_model {m['d_model']}), {src}; one model family.",
             f"One trait ({run.extract['trait']}); v from one promote/suppress pair.",
             f"One inoculation wording: {prompt_label(run.align['conditions']['inoc'])}."]
    control = control_of(run.align)
    share = loss_gap_share(run.align, control)
    if share > MAX_LOSS_GAP_SHARE:
        lines.append(f"Partial loss match: the loss-matched control ({control}) leaves {_gap_words(run.align, control)} "
                     "(the inoc - neutral loss gap).")
    excl = run.provenance["facts"].get("sft_excluded")
    if excl is None:
        lines.append("provenance.json records no sft_excluded counts.")
    else:
        lines.append("SFT examples excluded: " + ", ".join(f"{k} {v}" for k, v in excl.items()))
    summ = drift_summary(run.dir)
    lines.append("Drift (the outcome) not measured in this run." if summ is None
                 else "Drift rests on few seeds per condition and greedy answers to a fixed prompt set.")
    if summ is not None and "panel" not in summ:
        lines.append("Drift measured under the neutral test prompt only, which is also the neutral training prompt: "
                     "for every other training prompt it is also a change of context between training and test.")
    return [("h2", "6. Limitations"), ("ul", lines)]


def _plots(paths: Iterable[Path]) -> list[Block]:
    return [("img", p) for p in paths]


def build_blocks(run: Run) -> list[Block]:
    """The report a researcher reads: the answer, the headline plot and the numbers that decide it first, then
    the conditions, the method and the verdicts; every layer, condition and control is in the appendix."""
    verdicts = all_verdicts(run.dir, run.extract, run.align, run.example)
    return (title(run) + section_lead(run, verdicts, REPORT_APPENDIX_MD) + section_conditions(run)
            + section_hypothesis(run) + section_direction(run) + section_alignment_main(run)
            + section_drift_main(run) + section_verdicts(run) + section_limitations(run) + header(run))


def build_appendix(run: Run) -> list[Block]:
    """Every table and plot: alignment at every layer and position with all controls, drift per condition,
    the panel, the alignment-drift relation, transfer and steering."""
    m = run.provenance["facts"]["model"]
    head: list[Block] = [("h1", f"Appendix: every layer, condition and control (trait {run.extract['trait']}, "
                                f"model {m['name']})")]
    line = smoke_line(run.config)
    return (head + ([("p", line)] if line else []) + section_alignment(run) + section_drift(run)
            + section_steering(run))


def section_steering(run: Run) -> list[Block]:
    """Preventative steering vs inoculation (rules in :mod:`.steering`); 'not run' when absent."""
    summary = steering_summary(run.dir)
    blocks = section(summary)
    if summary is not None:  # the plots are written with the summary (stages.drift_summary)
        # The steering section leads with the alignment-vs-drift plot (the prompt section ends with it).
        blocks += _plots(reversed(run.layout.drift_plots(steering=True)))
    return blocks


def write_report(run_dir: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write report.md and report.html, and the appendix (report_appendix.md/.html), into out_dir (default run_dir),
    atomically; returns the report's two paths."""
    run_dir = Path(run_dir)
    out_dir = run_dir if out_dir is None else Path(out_dir)
    run = load_run(run_dir)
    blocks, appendix = build_blocks(run), build_appendix(run)
    out = RunLayout(out_dir)
    md, htm = out.report_md, out.report_html
    write_text(out.report_appendix_md, render_md(appendix, out_dir))
    write_text(out.report_appendix_html, render_html(appendix))
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
