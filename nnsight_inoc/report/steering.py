"""Preventative steering vs inoculation, from the drift summary's per-run rows.

Why its own module: the comparison is a rule like those in :mod:`.alignment_rules` (numbers
in, statement out, with the numbers that decided it), and keeping it here leaves the
report to lay out blocks. Every effect is paired by seed against the neutral run of the
same seed (same batches, same LoRA init), so seed-to-seed noise cancels; the CI is a
t-interval over those paired differences (no CI from one seed).

Effects per condition c (inoc, or a steering condition), each c - neutral:

* drift: change in the trait score under the neutral test prompt (post - pre), steering removed;
* cos: mean cos(-g, v) during training (all probes; for steering runs the probe is steered,
  i.e. the gradient training actually sees) and at step 0;
* trait under the training prompt after training (for steering runs that prompt is the
  neutral one, so it repeats the drift measurement's post score).

Steering vs inoculation is paired by seed too: (steer - neutral) - (inoc - neutral).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nnsight_inoc.measures.steering import is_steering
from nnsight_inoc.report.intervals_fmt import SCORE_DIFF_RANGE, STEP0, fmt_ci, zero_width
from nnsight_inoc.stats.intervals import CI_LEVEL
from nnsight_inoc.stats.pairing import paired_mean_ci

EFFECTS = (("drift_score", "drift in trait score"), ("align_during", "cos(-g, v) during training"),
           ("align_pre", "cos(-g, v) at step 0"), ("train_prompt_post_score", "trait under training prompt"))


def compare(ci: tuple[float, float, float, int], lower_is: str, higher_is: str) -> str:
    """Plain words for a paired difference: which side its CI excludes zero on, else no clear difference."""
    m, lo, hi, n = ci
    if n == 0 or m != m:
        return "not computable (no paired seeds)"
    if n < 2:
        return f"one seed only (difference {m:+.3f}), no CI"
    if hi < 0:
        return lower_is
    if lo > 0:
        return higher_is
    return "no clear difference (CI includes 0)"


def _sign(x: float) -> int:
    """-1, 0 or +1; NaN counts as 0 (no direction to agree on)."""
    return 0 if x != x or x == 0 else (1 if x > 0 else -1)


def _alike_words(signs: Sequence[tuple[int, int]]) -> str:
    """Whether steering moves drift and cos (vs neutral) the same way inoculation does; a zero change never agrees."""
    names = ("the drift change", "the cos change")
    zero = [n for n, (a, b) in zip(names, signs) if a == 0 or b == 0]
    differ = [n for n, (a, b) in zip(names, signs) if a != b and a != 0 and b != 0]
    if not zero and not differ:
        return "same sign as inoc for both the drift and the cos change vs neutral"
    parts = ([f"opposite sign to inoc for {' and '.join(differ)}"] if differ else []) + (
        [f"no change (steer or inoc) in {' and '.join(zero)}"] if zero else [])
    return "; ".join(parts)


def steering_conditions(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["condition"] for r in rows if is_steering(r["condition"])))


def comparison(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per condition: effects vs neutral; per steering condition: steering vs inoc and whether they act alike."""
    conds = (["inoc"] if any(r["condition"] == "inoc" for r in rows) else []) + steering_conditions(rows)
    vs_neutral = {c: {k: paired_mean_ci(rows, c, "neutral", k) for k, _ in EFFECTS} for c in conds}
    vs_inoc: dict[str, dict[str, Any]] = {}
    if "inoc" in vs_neutral:
        for c in steering_conditions(rows):
            d = paired_mean_ci(rows, c, "inoc", "drift_score")
            g = paired_mean_ci(rows, c, "inoc", "align_during")
            signs = [(_sign(vs_neutral[c][k][0]), _sign(vs_neutral["inoc"][k][0])) for k in ("drift_score", "align_during")]
            same = [a == b != 0 for a, b in signs]
            vs_inoc[c] = {
                "drift": d, "cos": g,
                "drift_words": compare(d, "steering leaves less drift than inoculation",
                                       "inoculation leaves less drift than steering"),
                "cos_words": compare(g, "steering lowers cos(-g, v) more than inoculation",
                                     "inoculation lowers cos(-g, v) more than steering"),
                "alike": all(same),
                "alike_words": _alike_words(signs),
            }
    return {"vs_neutral": vs_neutral, "vs_inoc": vs_inoc}


def _fmt(ci: tuple[float, float, float, int], d: int = 3, bounds: tuple[float, float] | None = SCORE_DIFF_RANGE,
         step0: bool = False) -> str:
    """mean [t-interval] (n); clipped to ``bounds`` with a note; a step-0 difference identical over seeds (LoRA
    B = 0 at init: the probe sees the base model) reads 'seed-independent (step 0)', not a zero-width CI."""
    m, lo, hi, n = ci
    if n == 0:
        return "n/a"
    if lo != lo:
        return f"{m:+.{d}f} (n={n})"
    if step0 and zero_width(m, lo, hi):
        return f"{m:+.{d}f}, {STEP0} (n={n})"
    return f"{fmt_ci(m, lo, hi, d, bounds)} (n={n})"


def section(summary: Mapping[str, Any] | None) -> list[tuple]:
    """Report blocks from finetune/steering_summary.json: 'not run' unless it holds steering runs."""
    title = ("h2", "4b. Preventative steering vs inoculation")
    if summary is None or not steering_conditions(summary["rows"]):
        return [title, ("p", "Preventative steering: not run (no steer_* runs in finetune/steering_summary.json; "
                             "run `cli.py finetune --which steering` then `cli.py drift --which steering`).")]
    rows = summary["rows"]
    if not any(r["condition"] == "neutral" for r in rows):
        return [title, ("p", "Preventative steering runs exist but no neutral run is in the same summary, "
                             "so no effect can be paired; run drift with --which steering.")]
    res = comparison(rows)
    spec = {r["condition"]: r.get("steering") or {} for r in rows}
    units = sorted({s.get("units", "?") for c, s in spec.items() if is_steering(c)})
    intro = (f"Steering runs train under the neutral prompt with alpha * s(l) * v(l) added to the residual stream at "
             f"the listed layers on every token (alpha units: {', '.join(units)}; s(l) = the layer's median per-token "
             "residual norm for resid_norm, 1 for absolute; see nnsight_inoc/measures/steering.py), and are "
             "tested with the steering removed. Every effect is condition - neutral paired by seed, mean "
             f"[{CI_LEVEL:.0%} t-interval over seeds]. The alignment probe of a steering run is itself steered. "
             "Steering inside the nnsight trace equals a plain forward hook (tests/stages/test_steering.py).")
    head = ["condition", "alpha", "layers", *[f"{name} vs neutral" for _, name in EFFECTS]]
    table = []
    for c, eff in res["vs_neutral"].items():
        s = spec.get(c, {})
        table.append([c, f"{s['alpha']:g}" if "alpha" in s else "-", ",".join(map(str, s.get("layers", []))) or "-",
                      *[_fmt(eff[k], 4, None, step0=k == "align_pre") if k.startswith("align") else _fmt(eff[k])
                        for k, _ in EFFECTS]])
    blocks: list[tuple] = [title, ("p", intro), ("table", head, table)]
    if not res["vs_inoc"]:
        blocks.append(("p", "No inoc runs in this summary: steering cannot be compared with inoculation."))
        return blocks
    comp = [[c, _fmt(x["drift"]), x["drift_words"], _fmt(x["cos"], 4, None), x["cos_words"], x["alike_words"]]
            for c, x in res["vs_inoc"].items()]
    blocks.append(("table", ["steering condition", "drift: steer - inoc", "which reduces drift more",
                             "cos during: steer - inoc", "which moves cos more", "acts like inoculation?"], comp))
    return blocks
