"""Report sections for issue 22: the content leak's own shift (inside and beyond the quote) and C1's structured
null. Each reads the align summary and says "not measured" when a run predates the block, so older reports
still render."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nnsight_inoc.report.intervals_fmt import match_words
from nnsight_inoc.report.render import Block
from nnsight_inoc.report.structured_rules import MIN_MARGIN


def _ci(b: Mapping[str, Any], layer: int | None = None) -> str:
    if layer is None:
        d, lo, hi = b["diff_cos"], b["lo"], b["hi"]
    else:
        d, lo, hi = b["diff_cos"][layer], b["lo"][layer], b["hi"][layer]
    if d != d:
        return "n/a"
    return f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def section_leak_shift(align: Mapping[str, Any]) -> list[Block]:
    """Each leak condition against its base (leak_X - neutral, inoc_leak_X - inoc) at the reporting layer, at the
    quoted assistant tokens and beyond the longest quote."""
    title: Block = ("h3", "The content leak's own shift, inside and beyond the quote")
    shift, bl = align.get("leak_shift"), align.get("beyond_leak")
    if not isinstance(shift, Mapping):
        return [title, ("p", "Not measured in this run (no leak_shift block: no content-leak condition, or the summary "
                             "predates issue 22).")]
    layer = int(align["layer"])
    quoted = [p for p in align["positions"] if p != "final_prompt"]
    beyond = list(bl["positions"]) if isinstance(bl, Mapping) and "positions" in bl else []
    rows = []
    for name, rec in shift["conditions"].items():
        if "error" in rec:
            rows.append([name, "-", "-", rec["error"]] + [""] * (len(quoted) + len(beyond)))
            continue
        b = rec.get("beyond", {})
        same = rec.get("quoted_same_examples", {}).get("a_sum")
        rows.append([name, rec["base"], str(rec["words"]), _ci(same, layer) if same else "n/a"]
                    + [_ci(rec["quoted"][p], layer) for p in quoted] + [_ci(b[p], layer) if p in b else "n/a"
                                                                          for p in beyond])
    text = (f"Mean cos(-g, v) of each leak condition minus its base condition at layer {layer}, paired bootstrap "
            "95% CI over examples. The quoted positions (a1.., a_sum) lie inside the words the leak quotes, where "
            "the quote itself changes the loss; the b positions are the same completion tokens after the longest "
            "quote of the factorial, where no leak quotes anything.")
    if isinstance(bl, Mapping) and "words" in bl:
        text += (f" Beyond the quote: after the first {bl['words']} words, {bl['n_examples']} examples; "
                 f"{bl['n_excluded']} excluded for every condition (too few tokens beyond): "
                 + (", ".join(map(str, bl["excluded_ids"][:10])) + (" ..." if bl["n_excluded"] > 10 else "")
                    if bl["n_excluded"] else "none") + ".")
    elif isinstance(bl, Mapping) and "error" in bl:
        text += f" Beyond the quote: not computable ({bl['error']})."
    return [title, ("p", text),
            ("table", ["leak condition", "base", "words", "a_sum on the b examples"] + quoted + beyond, rows)]


def section_structured_null(align: Mapping[str, Any]) -> list[Block]:
    """inoc - neutral along v and along the structured directions C1 is judged against (issue 22)."""
    title: Block = ("h3", "C1's structured null: the same contrast along other directions")
    s = align.get("structured_null")
    if not isinstance(s, Mapping):
        return [title, ("p", "Not measured in this run (the summary predates issue 22): C1 is judged against the "
                             "random-sphere null only.")]
    if "error" in s:
        return [title, ("p", f"Not computable: {s['error']}")]
    rows = [["v (the trait)", _ci(s["v"]), "", ""]]
    others = s.get("other_traits")
    if isinstance(others, Mapping):
        rows += [[f"trait {t}", _ci(e), f"{e.get('cos_with_v', float('nan')):+.3f}", ""] for t, e in others.items()]
    pcs = s["pcs"]["directions"] if isinstance(s.get("pcs"), Mapping) else {}
    rows += [[f"neutral-gradient {k.upper()}", _ci(e), f"{e.get('cos_with_v', float('nan')):+.3f}",
              f"{e['explained_variance']:.1%}"] for k, e in pcs.items()]
    tf = s.get("trait_free", {}) if isinstance(s.get("trait_free"), Mapping) else {}
    tf_rows = [[t, _ci(e["shift"]), _ci(e["inoc_minus"])] for t, e in tf.items()]
    out: list[Block] = [title,
                        ("p", f"{s['contrast']} at layer {s['layer']}, {s['position']} ({s['n_examples']} examples): "
                              "the change in mean cos(-g, u) along each direction u, paired bootstrap 95% CI. C1 "
                              "needs |change along v| above every other row's (margin "
                              f"{MIN_MARGIN}), and inoc - each trait-free prompt's CI away from 0 on the same side."
                              + ("" if isinstance(others, Mapping) else " Other traits' directions: not measured.")),
                        ("table", ["direction u", "inoc - neutral along u", "cos(u, v)", "variance share"], rows)]
    if tf_rows:
        out.append(("table", ["trait-free prompt t", "t - neutral along v", "inoc - t along v"], tf_rows))
    return out


def dial_words(m: dict[str, Any]) -> str:
    """The dial search's match in words, one form for the console and the report (``stages/leak.py`` logs it; the report prints it from ``align/leak.json``):
    words, the two reductions on the selection examples, and how far off (:func:`match_words`)."""
    return (f"{m['words']} words lower the loss by {m['achieved']['mean']:+.4f} nats vs the target's "
            f"{m['reduction']['mean']:+.4f} on the dial's selection examples "
            f"({match_words(m['achieved']['mean'], m['reduction']['mean'])}; "
            f"{'matched' if m['matched'] else 'NOT matched'})")
