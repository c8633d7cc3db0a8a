"""Do published numbers change with the issue-18 scorers? Rescore every saved answer, old vs new.

Issue 18, part D: the ALL-CAPS score counted letters without an upper-case form, and the
Spanish score called English about Spain (and code) Spanish. This reads ``results/`` (never
writes it), finds every published number that depends on those scores and whose inputs are
saved, recomputes it with the old scorer (``nnsight_inoc/data/scorers/legacy.py``; checked against the
stored value, so the recomputation is faithful) and with the new one, and prints a table:
max |new - old| per file kind, then every published number that moves by more than 0.005.
Numbers whose answers are not saved are listed as such.

    PYTHONPATH=. python experiments/rescore_published.py [--results results] [--json-out FILE]

Saved answers: ``finetune/pre/*.json`` (all base-model answers per system prompt),
``drift.json`` (``answers_head``: the first 5 of 100 answers before and after training; the
pre ones also lie in ``pre/``), and ``sft_completions.json`` (the Spanish SFT source answers).
Not saved: the extract stage's generations (``monitoring.csv`` has scores only) and the
trained models' answers beyond the first five. The politeness study uses neither scorer.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nnsight_inoc.data.scorers.caps import caps_score
from nnsight_inoc.data.scorers.legacy import old_caps_score, old_spanish_score
from nnsight_inoc.data.scorers.spanish import spanish_score

Scorer = Callable[[str], "float | None"]
SCORERS: dict[str, tuple[Scorer, Scorer]] = {"allcaps": (old_caps_score, caps_score),
                                             "spanish": (old_spanish_score, spanish_score)}
REPUBLISH_AT = 0.005  # issue 18: a published number that moves by more than this is republished
PreIndex = dict[tuple[str, str, tuple[str, ...]], dict[str, dict[str, float]]]


def _config(path: Path) -> dict[str, Any] | None:
    """The config.toml of the run folder holding ``path`` (the nearest one above it)."""
    for d in path.parents:
        if (d / "config.toml").is_file():
            return tomllib.loads((d / "config.toml").read_text())
    return None


def trait_of(path: Path) -> str | None:
    cfg = _config(path)
    return None if cfg is None else cfg["trait"]["name"]


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def stats(scores: list[float | None]) -> dict[str, float]:
    """mean, share above 0.5 and unscored count, by the rules of ``traits.score_texts``."""
    got = [s for s in scores if s is not None]
    n = len(got)
    return {"mean_score": sum(got) / n if n else math.nan,
            "share_above_half": sum(s > 0.5 for s in got) / n if n else math.nan,
            "n_unscored": float(len(scores) - n)}


class Table:
    """Rows of (file kind, where, stored, old, new); aggregated per kind at the end."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.not_recomputable: dict[str, int] = defaultdict(int)

    def add(self, kind: str, where: str, stored: float | None, old: float, new: float) -> None:
        if stored is not None and not (math.isnan(stored) and math.isnan(old)) and abs(stored - old) > 1e-9:
            raise ValueError(f"{where}: recomputed old value {old} differs from the stored {stored}; the inputs differ")
        self.rows.append({"kind": kind, "where": where, "stored": stored, "old": old, "new": new, "delta": new - old})

    def summary(self) -> list[dict[str, Any]]:
        by: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.rows:
            by[r["kind"]].append(r)
        out = []
        for kind, rows in by.items():
            worst = max(rows, key=lambda r: abs(r["delta"]) if not math.isnan(r["delta"]) else -1.0)
            per_answer = "per-answer" in kind or "score (" in kind  # share_above_half counts score > 0.5
            flips = sum((r["old"] > 0.5) != (r["new"] > 0.5) for r in rows) if per_answer else None
            out.append({"kind": kind, "n": len(rows), "n_over": sum(abs(r["delta"]) > REPUBLISH_AT for r in rows),
                        "flips": flips, "max_abs_delta": abs(worst["delta"]), "worst": worst["where"],
                        "old": worst["old"], "new": worst["new"]})
        return out


def rescore_pre(results: Path, table: Table) -> PreIndex:
    """Every pre/*.json; returns (trait, system prompt, first 5 answers) -> {"old": stats, "new": stats}."""
    index: PreIndex = {}
    for f in sorted(results.glob("*/finetune/pre/*.json")):
        trait = trait_of(f)
        if trait not in SCORERS:
            continue
        d = json.loads(f.read_text())
        b, (old, new), where = d["behaviour"], SCORERS[trait], str(f.relative_to(results))
        s_old, s_new = stats([old(a) for a in b["answers"]]), stats([new(a) for a in b["answers"]])
        for key in s_old:
            table.add(f"{trait} pre/*.json {key}", f"{where} ({d['system'][:40]!r})", b[key], s_old[key], s_new[key])
        for i, (a, stored) in enumerate(zip(b["answers"], b["scores"])):
            table.add(f"{trait} pre/*.json per-answer score", f"{where}#{i}", _nan(stored), _nan(old(a)), _nan(new(a)))
        index[(trait, d["system"], tuple(b["answers"][:5]))] = {"old": s_old, "new": s_new}
    return index


def rescore_drift(results: Path, pre: PreIndex, table: Table) -> None:
    """drift.json: the pre side from pre/ (drift = post - pre, so its pre term moves by -(new - old)); the post
    side only on its five saved answers, which are no published number but hint at how post would move."""
    for f in sorted(results.rglob("drift.json")):
        trait = trait_of(f)
        if trait not in SCORERS:
            continue
        d, (old, new) = json.loads(f.read_text()), SCORERS[trait]
        train_prompt = json.loads((f.parent / "train.json").read_text())["system_prompt"]
        for side in ("neutral_prompt", "training_prompt"):
            rec, where = d[side], f"{f.relative_to(results)} {side}"
            hit = [v for (t, s, head), v in pre.items() if t == trait and head == tuple(rec["pre"]["answers_head"])
                   and (side == "neutral_prompt" or s == train_prompt)]
            if not hit:
                table.not_recomputable[f"{trait} drift.json pre (no matching pre/ file)"] += 1
            for key in ("mean_score", "share_above_half") if hit else ():
                old_v, new_v = hit[0]["old"][key], hit[0]["new"][key]
                table.add(f"{trait} drift.json pre {key}", where, rec["pre"][key], old_v, new_v)
            heads = rec["post"]["answers_head"]
            for i, a in enumerate(heads):
                table.add(f"{trait} drift.json post answers_head score (5 of 100)", f"{where}#{i}", None,
                          _nan(old(a)), _nan(new(a)))
            table.add(f"{trait} drift.json post answers_head mean (hint, not published)", where, None,
                      stats([old(a) for a in heads])["mean_score"], stats([new(a) for a in heads])["mean_score"])
            for key in ("mean_score", "share_above_half"):
                table.not_recomputable[f"{trait} drift.json post/drift {key} (post answers not saved)"] += 1


def rescore_summaries(results: Path, pre: PreIndex, table: Table) -> None:
    """finetune_summary.json / steering_summary.json rows: pre_score is the neutral prompt's pre mean."""
    names = ("finetune_summary.json", "steering_summary.json")
    for f in sorted(p for name in names for p in results.glob(f"*/finetune/{name}")):
        trait = trait_of(f)
        if trait not in SCORERS:
            continue
        d, system = json.loads(f.read_text()), _config(f)["align"]["conditions"]["neutral"]
        neutral = [v for (t, s, _), v in pre.items() if t == trait and s == system]
        if not neutral:
            raise ValueError(f"{f}: no pre/ file for the neutral prompt {system!r}; cannot recompute pre_score")
        for r in d["rows"]:
            table.add(f"{trait} {f.name} rows pre_score", f"{f.relative_to(results)} {r['condition']} seed {r['seed']}",
                      r["pre_score"], neutral[0]["old"]["mean_score"], neutral[0]["new"]["mean_score"])
            for key in ("post_score", "drift_score", "drift_share", "train_prompt_post_score"):
                table.not_recomputable[f"{trait} {f.name} rows {key} (post answers not saved)"] += 1
        table.not_recomputable[f"{trait} {f.name} correlations/relation/condition_means (need post)"] += 1


def rescore_sft_filter(results: Path, table: Table) -> None:
    """The Spanish SFT filter: answers kept as Spanish (score >= sft_min_score 0.5) before the token-length check,
    which needs the study model's tokenizer and is not redone here."""
    for f in sorted(results.glob("*/sft_completions.json")):
        trait = trait_of(f)
        if trait != "spanish":
            continue  # politeness: another scorer; ALL-CAPS publishes no SFT sources
        answers = json.loads(f.read_text())["source_answers"]
        counts = {}
        for name, fn in zip(("old", "new"), SCORERS[trait]):
            scores = [fn(a) for a in answers]
            c = {"unscorable": sum(s is None for s in scores),
                 "not_trait": sum(s is not None and s < 0.5 for s in scores)}
            counts[name] = {**c, "kept_before_too_short": len(answers) - c["unscorable"] - c["not_trait"]}
        for key in counts["old"]:
            table.add(f"{trait} sft_completions.json filter count: {key}", str(f.relative_to(results)), None,
                      float(counts["old"][key]), float(counts["new"][key]))


def not_saved(results: Path, table: Table) -> None:
    """Score-based numbers whose answers were never saved."""
    for f in sorted(results.glob("*/extract/monitoring.csv")):
        if trait_of(f) in SCORERS:
            table.not_recomputable[f"{trait_of(f)} extract: monitoring.csv scores, behaviour means, monitoring r"] += 1
    for f in sorted(results.glob("*/align/lossmatch.json")):
        if trait_of(f) in SCORERS:
            table.not_recomputable[f"{trait_of(f)} align/lossmatch.json candidates' answer_trait_score"] += 1


def _echo(summary: list[dict[str, Any]], table: Table) -> None:
    click.echo(f"{'file kind / number':62s} {'n':>5s} {'>0.005':>6s} {'x0.5':>5s} {'max|new-old|':>12s}  worst")
    for s in summary:
        flips = "" if s["flips"] is None else str(s["flips"])
        click.echo(f"{s['kind'][:62]:62s} {s['n']:5d} {s['n_over']:6d} {flips:>5s} {s['max_abs_delta']:12.4f}  "
                   f"{s['worst'][:58]} ({s['old']:.4f} -> {s['new']:.4f})")
    click.echo(f"\n>0.005: numbers that moved by more than {REPUBLISH_AT}; x0.5: per-answer scores that crossed 0.5.")
    moved = [r for r in table.rows if abs(r["delta"]) > REPUBLISH_AT and "per-answer" not in r["kind"]
             and "answers_head" not in r["kind"]]
    click.echo(f"\npublished numbers that move by more than {REPUBLISH_AT}: {len(moved)}")
    for r in moved:
        click.echo(f"  {r['kind']}: {r['where']}: {r['old']:.4f} -> {r['new']:.4f} ({r['delta']:+.4f})")
    click.echo("\nnot recomputable (inputs not saved):")
    for k, n in table.not_recomputable.items():
        click.echo(f"  {k}: {n}")


@click.command()
@click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(file_okay=False))
@click.option("--json-out", default=None, type=click.Path(dir_okay=False),
              help="Also write the rows (not under results/).")
def main(results_dir: str, json_out: str | None) -> None:
    results, table = Path(results_dir), Table()
    if json_out and Path(json_out).resolve().is_relative_to(results.resolve()):
        raise click.BadParameter("--json-out must not be under the results folder (it is read-only here)")
    pre = rescore_pre(results, table)
    rescore_drift(results, pre, table)
    rescore_summaries(results, pre, table)
    rescore_sft_filter(results, table)
    not_saved(results, table)
    summary = table.summary()
    _echo(summary, table)
    if json_out:
        doc = {"summary": summary, "rows": table.rows, "not_recomputable": table.not_recomputable}
        Path(json_out).write_text(json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    main()
