"""The report's lead: the answer, the headline plot and the few numbers that decide it, before any table.

The answer needs C5, C2, C9 and C10 (:mod:`.answer`); C11 (the leak factorial) is shown beside them. Each
row is one contrast with its estimate and interval, printed by :func:`.intervals_fmt.fmt_est` (never an
estimate outside its own interval, a drift interval clipped to [-1, 1]), and the claim's label. Every
layer, condition and control follows in the appendix.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nnsight_inoc.report import alignment_rules as AR
from nnsight_inoc.report.answer import answer
from nnsight_inoc.report.contrast_rules import contrasts, factorial_targets
from nnsight_inoc.report.controls import leak_target
from nnsight_inoc.report.drift_rules import main_drift
from nnsight_inoc.report.figures_run import HEADLINE
from nnsight_inoc.report.intervals_fmt import SCORE_DIFF_RANGE, fmt_est
from nnsight_inoc.report.load import Run, drift_summary
from nnsight_inoc.report.render import Block
from nnsight_inoc.report.smoke import smoke_reasons
from nnsight_inoc.report.verdicts import Verdict, control_of, fmt_p

QUESTION = "Does inoculation reduce drift by rotating gradients away from v?"
DRIFT_ROWS = (("C5", "inoc-neutral", "inoc drifts less than neutral"),
              ("C9", "zero_v-neutral", "removing v's share (zero_v) drifts less than neutral"),
              ("C9", "zero_v-zero_rand", "... and less than removing a random direction's (zero_rand)"),
              ("C10", "restore_v-inoc", "restoring v's share under inoc (restore_v) drifts more than inoc"))


def smoke_label(label: str, config: Mapping[str, Any]) -> str:
    """A verdict label as printed: marked meaningless in a smoke run (:mod:`.smoke`)."""
    return f"{label} (meaningless: smoke run)" if smoke_reasons(config) else label


def _c2_row(align: Mapping[str, Any], label: str) -> list[str]:
    control = control_of(align)
    key, position, source = f"inoc-{control}", AR.REPORT_POSITION, None
    bl = align.get("beyond_leak")
    if leak_target(control) is not None and isinstance(bl, Mapping) and key in bl.get("contrasts", {}):
        position, source = "b_sum", bl["contrasts"]
    (d, lo, hi, _, pn), _ = AR.contrast_numbers(align, key, position, source)
    return ["C2", f"{key}: cos(-g, v), layer {align['layer']}, {position}", f"{fmt_est(d, lo, hi, 4)}",
            f"bootstrap over examples; random-direction null p {fmt_p(pn)}", label]


def key_rows(run: Run, labels: Mapping[str, str]) -> list[list[str]]:
    """[claim, contrast, estimate [interval], interval and n, label] for C5, C2, C9, C10 and C11."""
    summ = drift_summary(run.dir)
    pairs: Mapping[str, Any] = {}
    if summ is not None:
        blk = summ.get("contrasts") or contrasts(summ["rows"], main_drift(summ))
        pairs = blk["pairs"]

    def drift_row(cid: str, key: str, words: str) -> list[str]:
        b = pairs.get(key)
        if b is None:
            return [cid, f"{key} drift: {words}", "not run", "-", labels[cid]]
        est = fmt_est(_f(b["estimate"]), _f(b["lo"]), _f(b["hi"]), 3, SCORE_DIFF_RANGE)
        return [cid, f"{key} drift: {words}", est, f"t-interval over {b['n_seeds']} seed(s)", labels[cid]]

    rows = [drift_row(*DRIFT_ROWS[0]), _c2_row(run.align, labels["C2"]), *(drift_row(*r) for r in DRIFT_ROWS[1:])]
    conds = list(dict.fromkeys(r["condition"] for r in (summ or {}).get("rows", [])))
    targets = factorial_targets(conds) or ["inoc"]
    rows += [drift_row("C11", f"inoc_leak_{x}-leak_{x}", f"inoculation at a matched leak ({x})") for x in targets]
    return rows


def _f(x: Any) -> float:
    return float("nan") if x is None else float(x)


def section_lead(run: Run, verdicts: Sequence[tuple[str, str, Verdict]], appendix: str) -> list[Block]:
    """The answer, the headline figure, the deciding numbers, and where the rest is."""
    labels = {cid: smoke_label(v.label, run.config) for cid, _, v in verdicts}
    label, sentence = answer({cid: v for cid, _, v in verdicts})
    out: list[Block] = [("h2", "Answer"),
                        ("verdict", "Answer", QUESTION, smoke_label(label, run.config), sentence)]
    headline = run.layout.finetune_dir / HEADLINE
    if headline.is_file():
        out.append(("img", headline))
    out += [("h3", "The numbers that decide it"),
            ("p", "Drift contrasts: the trait score's post - pre drift of a minus b, paired by seed (the verdicts' "
                  "unit of replication). C2: the change in gradient alignment against the loss-matched control."),
            ("table", ["claim", "contrast", "estimate [interval]", "interval", "label"], key_rows(run, labels)),
            ("p", f"Every layer, every condition and every control: {appendix}, beside this report.")]
    return out
