"""Render the study's write-up (results/WRITEUP.md) from the published JSON, so every number in it comes from a file.

    python experiments/writeup.py --study results/decisive_allcaps --study results/decisive_spanish \
        --earlier results/cross_trait.json --out results/WRITEUP.md

Each ``--study`` is a published run folder of issue 23's decisive sweep (gpu/decisive_<trait>.toml). What a folder
does not hold yet (a trait not run, seeds still to come) is said, not skipped: the text names what is missing, and
the answer line is the pre-registered rules' own (nnsight_inoc/report/answer.py), never written by hand.
``--earlier`` is the cross-trait table of the first studies (results/cross_trait.json), quoted for context.
The order of sections is issue 23's: hypothesis, direction, gradient alignment with its controls, drift with
its relation to alignment and the intervention arms, discussion.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from nnsight_inoc.report.alignment_rules import REPORT_POSITION, contrast_numbers
from nnsight_inoc.report.answer import answer
from nnsight_inoc.report.claims import all_verdicts
from nnsight_inoc.report.load import drift_summary, load_run

ARMS = ("zero_v", "zero_rand", "flip_v", "restore_v")
FIGURES = (  # (file under the study folder, caption): the 3-5 plots, each readable alone
    ("finetune/fig_headline_drift.png", "Drift per training condition, one dot per seed, with the verdicts' paired "
     "t-intervals over seeds (headline)."),
    ("align/fig_cos_vs_layer_a_sum.png", "Gradient alignment cos(-g, v) per layer before training, by training prompt."),
    ("align/fig_leak_dial.png", "The content-leak dial: loss reduction against quoted words, with the targets marked."),
    ("finetune/fig_projection_shift_panels.png", "Projection shift on v per layer after training, one panel per "
     "condition."),
)


def _f(x: Any, d: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.{d}f}"


def _ci(m: float, lo: float, hi: float, d: int = 4) -> str:
    return f"{_f(m, d)} [{_f(lo, d)}, {_f(hi, d)}]"


def direction_text(run: Any) -> str:
    ex = run.extract
    layer = int(ex["layer"])
    auroc = ex["heldout_auroc"]["final_prompt"][layer]
    mon = ex["monitoring"]
    r = next((b.get("r") for b in mon.get("by_layer", []) if b.get("layer") == layer), None)
    r_txt = f", and its projection tracks the trait score of {mon['n_generations']} answers (r {r:.2f})" if r else ""
    return (f"v(l) is the mean residual stream under \"{ex['promote']}\" minus under \"{ex['suppress']}\", at the final "
            f"prompt token, from {ex['n_direction_train']} direction prompts. At the reporting layer {layer}, fixed by "
            f"rule ({ex['layer_rule']}) before any contrast was seen, it separates the two prompts on "
            f"{ex['n_direction_heldout']} held-out prompts with AUROC {auroc:.4f}{r_txt}.")


def alignment_text(run: Any, verdicts: dict[str, Any]) -> list[str]:
    al = run.align
    layer = int(al["layer"])
    out = [f"Reporting layer {layer}, position {REPORT_POSITION} (the sum over the first assistant tokens), "
           f"{al['conditions']['neutral']['n']} SFT examples, mean cos(-g, v) differences with {al['n_bootstrap']}-draw "
           "bootstrap 95% CIs and the exact random-direction null p:"]
    for key in ("inoc-neutral", "lossmatch-neutral", "inoc-lossmatch", "inoc-leak_inoc", "explicit-neutral"):
        if key in al["contrasts"]:
            (d, lo, hi, _pb, pn), _ = contrast_numbers(al, key)
            out.append(f"- {key}: {_ci(d, lo, hi)}, null p {pn:.2g}")
    bl = al.get("beyond_leak")
    if isinstance(bl, dict) and "inoc-leak_inoc" in bl.get("contrasts", {}):
        (d, lo, hi, _pb, pn), _ = contrast_numbers(al, "inoc-leak_inoc", "b_sum", bl["contrasts"])
        out.append(f"- inoc-leak_inoc beyond the quote (b_sum, the tokens after the first {bl['words']} words, "
                   f"{bl['n_examples']} examples): {_ci(d, lo, hi)}, null p {pn:.2g}")
    for cid in ("C1", "C2", "C3", "C4"):
        out.append(f"- **{cid}: {verdicts[cid].label}.** {verdicts[cid].reason[:600]}"
                   + ("..." if len(verdicts[cid].reason) > 600 else ""))
    return out


def drift_text(run_dir: Path, verdicts: dict[str, Any]) -> list[str]:
    summ = drift_summary(run_dir)
    if summ is None:
        return ["No trained runs are published in this folder yet: drift, C5-C11 and the answer wait for them."]
    rows = summ["rows"]
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    measure = "drift_panel_score" if all("drift_panel_score" in r for r in rows) else "drift_score"
    out = [f"{len(rows)} LoRA runs of {len(conds)} training conditions at seeds {seeds} "
           f"({'missing: ' + ', '.join(summ['not_run']) if summ.get('not_run') else 'none missing'}). "
           f"Drift = trait score after minus before training, "
           f"{'mean over the drift panel of trait-free test prompts' if measure != 'drift_score' else 'neutral test prompt'}:",
           "", "| condition | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |", "|---" * (len(seeds) + 2) + "|"]
    for c in conds:
        vals = {r["seed"]: r[measure] for r in rows if r["condition"] == c}
        cells = [_f(vals.get(s)) for s in seeds]
        mean = sum(vals.values()) / len(vals)
        out.append(f"| {c} | " + " | ".join(cells) + f" | {_f(mean)} |")
    out.append("")
    for cid in ("C5", "C8", "C9", "C10", "C11", "C6", "C7"):
        if cid in verdicts:
            why = verdicts[cid].reason
            out.append(f"- **{cid}: {verdicts[cid].label}.** {why[:700]}" + ("..." if len(why) > 700 else ""))
    return out


def study_section(folder: Path) -> tuple[list[str], str]:
    """The write-up's lines for one study folder, and its one-line answer."""
    if not (folder / "align" / "align_summary.json").is_file():
        return [f"### {folder.name}", "", f"Not run yet: {folder} holds no align summary."], f"{folder.name}: not run"
    run = load_run(folder)
    vs = all_verdicts(run.dir, run.extract, run.align, run.example)
    verdicts = {cid: v for cid, _, v in vs}
    ans = answer(verdicts)
    trait = run.config.get("trait", {}).get("name", folder.name)
    lines = [f"### {trait} ({folder})", "", "**Direction.** " + direction_text(run), "",
             "**Gradient alignment before training.**", *alignment_text(run, verdicts), "",
             "**Drift and the intervention arms.**", *drift_text(folder, verdicts), "",
             f"**Answer (pre-registered rules): {ans.label}.** {ans.reason}", ""]
    for path, caption in FIGURES:
        if (folder / path).is_file():
            lines += [f"![{caption}]({folder.name}/{path})", f"*{caption}*", ""]
    return lines, f"{trait}: {ans.label}"


def complete(folder: Path) -> bool:
    """Whether a study folder holds its whole sweep: an align summary and a drift summary with no run missing."""
    summ = drift_summary(folder) if (folder / "align" / "align_summary.json").is_file() else None
    return summ is not None and not summ.get("not_run")


def earlier_text(path: Path) -> list[str]:
    if not path.is_file():
        return []
    studies = json.loads(path.read_text())["studies"]
    out = ["Earlier studies (the first design, before the arms; results/cross_trait.md):", "",
           "| trait | layer | AUROC | inoc - neutral alignment (a_sum) | C5 drift reduced | answer then |",
           "|---|---|---|---|---|---|"]
    for s in studies:
        v = s.get("verdicts", {})
        out.append(f"| {s['trait']} | {s['layer']} | {s['auroc']:.4f} | {s['align_a_sum']} | {v.get('C5', 'n/a')} | "
                   f"{s.get('answer', 'n/a')} |")
    return out + [""]


HYPOTHESIS = """## 1. Hypothesis, and why the cosine is the test
Inoculation prompting trains on trait data under a system prompt that already asks for the trait, and the model then
shows less of the trait afterwards. The hypothesis tested here: the inoculation prompt turns the training gradient
away from the trait direction v, so the LoRA update carries less of the trait. The test statistic is cos(-g, v), the
angle between the negative gradient of the SFT loss with respect to the residual stream and v, not the loss or the
gradient norm. A prompt that makes the trait data more likely lowers the loss and shrinks every gradient (the
triviality concern): a smaller projection on v would then follow from a smaller loss alone. Only the angle separates
"turned away from the trait" from "smaller overall". Because a prompt changes the loss and the angle at once, the
decisive test is causal: change the gradient itself during training (remove, reverse or restore its component along
v) and see what drift does, with the rules fixed before the data (issue 22).
"""

DISCUSSION = """## 5. Discussion
What the arms can say: if removing v's component of the gradient (zero_v) prevents drift while removing a random
direction's (zero_rand) does not, the component along v is sufficient to carry the trait into the weights; if giving
the inoculated gradient back neutral's alignment (restore_v) brings drift back, the rotation is necessary for
inoculation's protection. The published intervention work closest to this (Grant, Gillioz, Ward and McGrath 2026,
"Shifting the Gradient") forces the trait-direction component of the training gradient to zero or flips it, on a
different trait; persona-vector work (Chen et al. 2025) prevents drift by steering along the trait direction during
training (preventative steering, measured here in results/allcaps). The numbers above are this toolkit's own; where
a trait or seeds are still missing the answer says so, and nothing here generalises beyond the model
(Qwen2.5-Coder-1.5B-Instruct), the traits and the LoRA budget used.
"""


@click.command()
@click.option("--study", "studies", multiple=True, type=click.Path(path_type=Path), help="A published decisive-sweep folder.")
@click.option("--earlier", type=click.Path(path_type=Path), default=Path("results/cross_trait.json"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results/WRITEUP.md"), show_default=True)
def main(studies: tuple[Path, ...], earlier: Path, out: Path) -> None:
    """Write the write-up from the published JSON (every number rendered, none typed by hand)."""
    body, answers = [], []
    for folder in studies:
        lines, ans = study_section(folder)
        body += lines
        answers.append(ans)
    text = ["# Does inoculation prompting reduce persona drift by rotating training gradients away from a trait "
            "direction?", "", f"Generated by `python experiments/writeup.py {' '.join('--study ' + str(s) for s in studies)}`"
            " from the JSON in each folder; the answers come from the pre-registered rules (README, Method notes).", "",
            "**Answers so far:** " + ("; ".join(answers) if answers else "no decisive study published yet") + ".", "",
            *([] if all(complete(f) for f in studies) and studies else
              ["**Interim:** the decisive sweep is not complete (a trait not run, or runs still to come: each study "
               "below names them); every answer here can still change, and none is a finding yet.", ""]),
            HYPOTHESIS, "## 2-4. Direction, gradient alignment, drift and the intervention arms, per trait", "",
            *earlier_text(earlier), *body, DISCUSSION]
    out.write_text("\n".join(text))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
