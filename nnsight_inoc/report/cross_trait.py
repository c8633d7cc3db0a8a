"""Cross-trait summary: for each study, the alignment effect, the drift effect and the relation side by side.

Why a separate table: the per-study reports answer "what happened for this trait"; whether the
mechanism generalises is a question about several traits at once, and it is easy to misread when
the numbers sit in different files with different layers. Every cell comes from a study's own
summary JSON and its rule-based verdicts (the same code as its report), so nothing is recomputed
differently here. Studies that have not run a stage say "not run".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.report import claims as R
from nnsight_inoc.report.answer import answer
from nnsight_inoc.report.controls import prompt_label
from nnsight_inoc.report.drift_rules import main_drift
from nnsight_inoc.report.load import drift_summary, load_run
from nnsight_inoc.report.verdicts import control_of, loss_gap_share

JSON_NAME = "cross_trait.json"
MD_NAME = "cross_trait.md"


def _cell(block: dict[str, Any], layer: int) -> str:
    return f"{block['diff_cos'][layer]:+.4f} [{block['lo'][layer]:+.4f}, {block['hi'][layer]:+.4f}]"


def study_row(run_dir: Path) -> dict[str, Any]:
    """One study's headline numbers and verdicts, read from its run folder."""
    run = load_run(run_dir)
    layer = int(run.align["layer"])
    c = run.align["contrasts"]["inoc-neutral"]
    full = {cid: v for cid, _, v in R.all_verdicts(run.dir, run.extract, run.align, run.example)}
    verdicts = {cid: v.label for cid, v in full.items()}
    ans = answer(full)
    within = (run.monitoring_within or {}).get("chosen", {})
    row: dict[str, Any] = {
        "study": run_dir.name,
        "trait": run.extract["trait"],
        "model": run.provenance["facts"]["model"]["name"],
        "layer": layer,
        "auroc": float(run.extract["chosen"]["auroc"]),
        "monitor_r": float(run.extract["chosen"]["pearson_r"]),
        "monitor_r_within": within.get("r"),
        "inoc_prompt": prompt_label(run.align["conditions"]["inoc"]),
        "loss_diff": float(c["loss"]["diff"]),
        "align_a_sum": _cell(c["a_sum"], layer),
        "align_final_prompt": _cell(c["final_prompt"], layer),
        "loss_control": control_of(run.align),
        "loss_gap_share": loss_gap_share(run.align),
        "verdicts": verdicts,
        "answer": ans.label,
        "answer_shortfall": list(ans.shortfall),
    }
    summ = drift_summary(run_dir)
    if summ is None:
        row["drift"] = None
        return row
    by = {cond: [r for r in summ["rows"] if r["condition"] == cond] for cond in ("neutral", "inoc")}
    mean = {cond: sum(r["drift_score"] for r in rs) / len(rs) for cond, rs in by.items() if rs}
    rel = summ.get("relation", {})
    target = main_drift(summ)
    panel = (summ.get("panel") or {}).get("by_condition", {})
    row["drift"] = {
        "neutral": mean.get("neutral"),
        "inoc": mean.get("inoc"),
        "main": target,
        "panel_neutral": panel.get("neutral", {}).get("mean"),
        "panel_inoc": panel.get("inoc", {}).get("mean"),
        "n_runs": summ["n_runs"],
        "n_prompts": len({r["condition"] for r in summ["rows"]}),
        "align_r": rel.get(f"align_pre~{target}"),
        "loss_r": rel.get(f"loss_reduction~{target}"),
        "partial_r": rel.get(f"align_pre~{target}|loss_split") or rel.get(f"align_pre~{target}|loss_reduction"),
        "collinearity": (rel.get("collinearity") or {}).get("max_abs_r"),
    }
    return row


def _r(rel: dict[str, Any] | None) -> str:
    if not rel or "r" not in rel:
        return "n/a" if not rel else rel.get("error", "n/a")
    return f"{rel['r']:+.2f} [{rel['lo']:+.2f}, {rel['hi']:+.2f}]"


def render(rows: list[dict[str, Any]]) -> str:
    head = ["", *[r["trait"] if r["trait"] == r["study"] else f"{r['trait']} ({r['study']})" for r in rows]]
    lines = [
        ("model", [r["model"] for r in rows]),
        ("inoculation prompt", [r["inoc_prompt"] for r in rows]),
        ("direction: layer, held-out AUROC, monitoring r (within prompts)",
         [f"{r['layer']}, {r['auroc']:.3f}, {r['monitor_r']:.2f} ("
          + ("n/a" if r.get("monitor_r_within") is None else f"{r['monitor_r_within']:.2f}") + ")" for r in rows]),
        ("inoc - neutral mean SFT loss (nats)", [f"{r['loss_diff']:+.3f}" for r in rows]),
        ("inoc - neutral cos(-g, v), a_sum, chosen layer", [r["align_a_sum"] for r in rows]),
        ("inoc - neutral cos(-g, v), final prompt, chosen layer", [r["align_final_prompt"] for r in rows]),
        ("loss match left (share of inoc - neutral; control)",
         [f"{r['loss_gap_share']:.0%} ({r['loss_control']})" for r in rows]),
        ("drift, neutral / inoc training (trait score, neutral test prompt)",
         [f"{r['drift']['neutral']:+.3f} / {r['drift']['inoc']:+.3f}" if r["drift"] else "not run" for r in rows]),
        ("drift, neutral / inoc training (panel of test prompts)",
         [f"{r['drift']['panel_neutral']:+.3f} / {r['drift']['panel_inoc']:+.3f}"
          if r["drift"] and r["drift"].get("panel_inoc") is not None else ("not measured" if r["drift"] else "not run")
          for r in rows]),
        ("runs (training prompts)",
         [f"{r['drift']['n_runs']} ({r['drift']['n_prompts']})" if r["drift"] else "not run" for r in rows]),
        ("alignment ~ drift r [CI over prompts]", [_r(r["drift"]["align_r"]) if r["drift"] else "not run" for r in rows]),
        ("loss reduction ~ drift r", [_r(r["drift"]["loss_r"]) if r["drift"] else "not run" for r in rows]),
        ("alignment ~ drift given loss reduction (partial r)",
         [_r(r["drift"]["partial_r"]) if r["drift"] else "not run" for r in rows]),
        ("collinearity: max abs r(alignment, loss reduction) (acceptance <= 0.5)",
         [f"{r['drift']['collinearity']:.3f}" if r["drift"] and r["drift"].get("collinearity") is not None
          else "n/a" for r in rows]),
        *[(f"{cid}", [r["verdicts"][cid] for r in rows]) for cid in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8",
                                                                             "C9", "C10", "C11")],
        ("answer: drift reduced by rotated gradients?", [f"**{r['answer']}**" for r in rows]),
        ("what fell short", ["; ".join(r["answer_shortfall"]).replace("|", "/") or "-" for r in rows]),
    ]
    out = ["# Cross-trait summary", "",
           "Each column is one study's run folder; every number and verdict is the one its own report shows "
           "(`nnsight_inoc/report/alignment_rules.py`, `nnsight_inoc/report/drift_rules.py`). Signs: cos(-g, v) < 0 = away from "
           "the trait; drift = trait score after minus before under the neutral test prompt (or the mean over the panel of "
           "test prompts, where measured). Verdict rules as of issue 22 (fixed reporting layer and a_sum for C1-C4; "
           "C5, C8-C11 by per-seed contrasts with a t-interval over seeds and the +-0.05 negligible band; the answer "
           "needs C5, C2, C9, C10; capped verdicts state their uncapped label).", "",
           "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join([name, *cells]) + " |" for name, cells in lines]
    return "\n".join(out) + "\n"


def write_cross_trait(run_dirs: list[Path], out_dir: Path) -> Path:
    if not run_dirs:
        raise ValueError("give at least one study run folder")
    rows = [study_row(d) for d in run_dirs]
    A.write_json(out_dir / JSON_NAME, {"studies": rows})
    path = out_dir / MD_NAME
    A.write_text(path, render(rows))
    return path
