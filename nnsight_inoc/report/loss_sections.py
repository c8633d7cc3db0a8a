"""Report sections on the loss controls (issue 16): the loss split, the content-leak match and control C per example.

Each section reads the align summary (and the control C block the loader computed) and says "not
measured" when a run predates the quantity, so published reports stay readable.
"""

from __future__ import annotations

from typing import Any, Mapping

from nnsight_inoc.core.artifacts import read_json
from nnsight_inoc.report.alignment_rules import REPORT_POSITION
from nnsight_inoc.report.control_c import at_layer
from nnsight_inoc.report.controls import LEAK_MATCH_TOLERANCE, prompt_label
from nnsight_inoc.report.intervals_fmt import match_words
from nnsight_inoc.report.leak_sections import dial_words
from nnsight_inoc.report.load import Run
from nnsight_inoc.report.render import Block
from nnsight_inoc.report.verdicts import fmt_p


def _num(x: Any, spec: str) -> str:
    """A number, or n/a for None and NaN (the report reads JSON null back as NaN)."""
    return "n/a" if x is None or x != x else format(x, spec)


def _ci(b: Mapping[str, float], d: int = 4) -> str:
    return f"{b['mean']:+.{d}f} [{b['lo']:+.{d}f}, {b['hi']:+.{d}f}]"


def section_loss_split(run: Run) -> list[Block]:
    """Per condition: the loss reduction relative to neutral, total and its content and trait parts."""
    split = run.align.get("loss_split")
    title: Block = ("h3", "Loss reduction split into content and trait parts")
    if not split:
        return [title, ("p", "Not measured in this run (the align conditions have no content_loss: the loss of the "
                             "untraited answer). The loss reduction is reported as a whole.")]
    rows = [[c, _ci(b["total"]), _ci(b["content"]), _ci(b["trait"])] for c, b in split["conditions"].items()]
    blocks: list[Block] = [title, ("p", "Relative to neutral, per example, mean [95% paired bootstrap CI over "
                                        f"examples], nats: {split['parts']}. The content part is what the prompt "
                                        "explains about *what* the answer says; the trait part is what it explains "
                                        "about the trait."),
                           ("table", ["condition", "total R", "content R_c", "trait R - R_c"], rows)]
    if split.get("without_content_loss"):
        blocks.append(("p", "Without content_loss (left out): " + ", ".join(split["without_content_loss"])))
    return blocks


def section_leak_match(run: Run) -> list[Block]:
    """The content-leak controls: dial, achieved loss reduction vs the target's, and whether it matched."""
    leaks = run.align.get("leak_match")
    title: Block = ("h3", "Content-leak control: the match achieved")
    if not leaks:
        return [title, ("p", "No content-leak control in this run (no leak_<target> condition); the loss-matched "
                             "comparison uses the trait-free pool prompt.")]
    rows = []
    search = (read_leak(run) or {}).get("targets", {})
    for name, m in leaks.items():
        cond = run.align["conditions"].get(name, {})
        dial = m["dial"] if isinstance(m.get("dial"), Mapping) else {}  # JSON null reads back as NaN
        r, t, g = m["reduction"], m["target_reduction"], m["gap_share"]
        found = search.get(m["target"])
        rows.append([name, m["target"], ", ".join(f"{k} {v}" for k, v in dial.items()) or "not recorded",
                     _ci(r), _ci(t), match_words(r["mean"], t["mean"], t["lo"], t["hi"], g["lo"], g["hi"]),
                     "matched" if m["matched"] else "NOT matched", dial_words(found) if found else "not recorded",
                     prompt_label(cond) if cond else "-"])
    return [title, ("p", "Loss reduction relative to neutral (nats, mean [95% bootstrap CI over examples]) of each "
                         "leak control and of the condition it was matched to, on the studied examples; the gap as a "
                         f"share of the target's reduction must lie within +-{LEAK_MATCH_TOLERANCE:.0%} (issue 16). "
                         "No percentage is printed when the target's reduction is near 0 or its interval includes 0. "
                         "The dial search column is the line the align stage logged (its selection examples)."),
            ("table", ["control", "target", "dial", "leak R", "target R", "gap / target R (studied examples)",
                       "match", "dial search (as logged)", "prompts"], rows)]


def read_leak(run: Run) -> dict[str, Any] | None:
    """``align/leak.json`` (the dial search), or None when absent (or when ``run`` has no folder: a summary alone)."""
    layout = getattr(run, "layout", None)
    path = layout.leak if layout is not None else None
    return read_json(path) if path is not None and path.is_file() else None


def section_control_c(run: Run) -> list[Block]:
    """Control C per example at the reporting layer: intercepts per condition, the shared slope, the mediator model."""
    title: Block = ("h3", "Control C per example: change in alignment at zero change in loss")
    ex = run.example
    layer = int(run.align["layer"])
    if ex is None:
        return [title, ("p", "Not computable: the align summary has no example_regression and align/rows.csv.gz "
                             "is absent.")]
    blocks: list[Block] = [title, ("p", f"{ex['note']}. Source: {ex.get('source', 'align summary')}. Layer {layer}; "
                                        f"the verdict (C4) reads the {REPORT_POSITION} row of the primary model.")]
    for pos in (REPORT_POSITION, "final_prompt"):
        pair = at_layer(ex, pos, layer)
        if pair is None:
            continue
        rows = []
        for model in ("primary", "mediator"):
            b = pair.get(model, {})
            if "error" in b:
                rows.append([model, "n/a", b["error"], "", "", ""])
                continue
            for c, a in b["intercept"].items():
                r = b["r_dcos_dloss"].get(c) if model == "primary" else None
                rows.append([model, c, f"{a['est']:+.4f} [{a['lo']:+.4f}, {a['hi']:+.4f}]", fmt_p(a["p_boot"]),
                             f"{b['mean_dcos'][c]:+.4f} / {b['mean_dloss'][c]:+.4f}", _num(r, "+.2f")])
            s = b["slope"]
            rows.append([model, "slope (cos per nat)", f"{s['est']:+.4f} [{s['lo']:+.4f}, {s['hi']:+.4f}]", "", "", ""])
            if isinstance(b.get("mediator"), Mapping):  # the primary model's is JSON null (NaN once loaded)
                m = b["mediator"]
                rows.append([model, "change in log |g| (per SD)", f"{m['est']:+.4f} [{m['lo']:+.4f}, {m['hi']:+.4f}]",
                             "", "", ""])
        blocks += [("p", f"Position {pos}:"),
                   ("table", ["model", "condition / term", "intercept at dloss = 0 [95% CI]", "p (bootstrap)",
                              "mean dcos / mean dloss", "r(dcos, dloss)"], rows)]
    return blocks


def section_legacy_regression(align: Mapping[str, Any]) -> list[Block]:
    """Today's regression (before issue 16), kept as description: it adjusts for loss differences between
    examples and for log |g|, a mediator, so it no longer decides C4."""
    layer, reg_rows = int(align["layer"]), []
    for key, rows in align["regression"].items():
        r = rows[layer]
        reg_rows.append([key, f"{r['coef_adjusted']:+.4f} [{r['coef_adjusted_lo']:+.4f}, {r['coef_adjusted_hi']:+.4f}]",
                         f"{r['coef_unadjusted']:+.4f}", fmt_p(r["coef_adjusted_p_holm"]),
                         f"{r['partial_r']:+.3f} [{r['partial_r_lo']:+.3f}, {r['partial_r_hi']:+.3f}]"])
    return [("h3", f"Earlier regression alignment ~ condition + z(loss) + z(log |g|), layer {layer} (description)"),
            ("p", "Kept for comparison with earlier reports. Its loss slope comes from differences between examples, "
                  "and log |g| lies on the hypothesised path, so control C is now the per-example model above."),
            ("table", ["position/contrast", "adjusted coef [95% CI]", "unadjusted", "Holm p", "partial r [95% CI]"],
             reg_rows)]
