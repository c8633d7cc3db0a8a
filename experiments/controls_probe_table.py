"""Markdown tables from experiments/controls_probe.py's JSON (what results/allcaps_controls/README.md quotes).

    python experiments/controls_probe_table.py results/allcaps_controls/controls_probe_allcaps.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from nnsight_inoc.stats.bootstrap import bootstrap_mean_ci_by_col
from nnsight_inoc.stats.relation import collinearity

N_BOOT = 2000


def tables(r: dict[str, Any]) -> str:
    """The dial, the matches, every condition's loss split, alignment and transfer, and the correlations."""
    L, pos = r["layer"], r["positions"]
    j = pos.index("a_sum")
    out = [f"n = {r['n_examples']} SFT examples per condition; alignment at layer {L} (extract's reporting layer), "
           "position a_sum; reductions are neutral minus condition (nats), 95% percentile bootstrap CIs over examples.",
           "", "**Dial** (words of the untraited answer quoted after the neutral prompt):", "",
           "| words | loss reduction | 95% CI |", "|---|---|---|"]
    for c in r["leak"]["curve"]:
        red = c["reduction"]
        out.append(f"| {c['words']} | {red['mean']:+.4f} | [{red['lo']:+.4f}, {red['hi']:+.4f}] |")
    out += ["", "**Matches** (tolerance ±10% of the target's reduction):", "",
            "| target | its reduction [CI] | words | leak's reduction [CI] | off by | matched |", "|---|---|---|---|---|---|"]
    for t, m in r["leak"]["targets"].items():
        w, a = m["reduction"], m["achieved"]
        out.append(f"| {t} | {w['mean']:+.4f} [{w['lo']:+.4f}, {w['hi']:+.4f}] | {m['words']} | "
                   f"{a['mean']:+.4f} [{a['lo']:+.4f}, {a['hi']:+.4f}] | {m['gap_share']:.1%} | {m['matched']} |")
    neu = r["conditions"]["neutral"]
    out += ["", "**Every training prompt** (loss split: content = CE of the untraited answer, trait = total − content; "
            "Δcos = cos(−g, v) − neutral's; transfer = ⟨−∇L_P, ∇J⟩ and its cosine under the neutral test prompt, "
            "mean over 3 LoRA seeds):", "",
            "| condition | loss | reduction | content part | trait part | Δcos a_sum | transfer | transfer cos |",
            "|---|---|---|---|---|---|---|---|"]
    for name, d in r["conditions"].items():
        red = neu["mean_loss"] - d["mean_loss"]
        red_c = neu["mean_content_loss"] - d["mean_content_loss"]
        dcos = d["mean_cos"][L][j] - neu["mean_cos"][L][j]
        tr = r.get("transfer", {}).get(name, {})
        out.append(f"| {name} | {d['mean_loss']:.4f} | {red:+.4f} | {red_c:+.4f} | {red - red_c:+.4f} | {dcos:+.5f} | "
                   f"{tr.get('inner', float('nan')):+.4f} | {tr.get('cos', float('nan')):+.4f} |")
    out += ["", "**Loss-matched comparisons** (paired per example at the reporting layer, a_sum; "
            f"{N_BOOT} bootstrap draws over examples):", "", "| contrast | Δcos | 95% CI |", "|---|---|---|"]
    for a, b in contrasts(r["conditions"]):
        x = np.array(r["conditions"][a]["cos_at_layer"])[:, j] - np.array(r["conditions"][b]["cos_at_layer"])[:, j]
        est, lo, hi = bootstrap_mean_ci_by_col(x[:, None], n_boot=N_BOOT, rng=0)
        out.append(f"| {a} − {b} | {est[0]:+.5f} | [{lo[0]:+.5f}, {hi[0]:+.5f}] |")
    out += ["", "**Correlations across the training prompts** (Pearson r of Δcos with each predictor, at the "
            "reporting layer):", "", "| position | loss reduction | trait part | content part | loss reduction, "
            "without the leak conditions |", "|---|---|---|---|---|"]
    for p in pos:
        x = r["relation"][p]
        out.append(f"| {p} | {x['r_alignment_loss_reduction']:+.3f} | {x['r_alignment_trait_part']:+.3f} | "
                   f"{x['r_alignment_content_part']:+.3f} | {x['without_leak']:+.3f} |")
    col = design_collinearity(r)
    out += ["", f"(These r leave neutral out: {len(r['conditions']) - 1} prompts, as `experiments/controls_probe.py` "
            "computed them.)", "", f"**Collinearity** (the package's measure, `stats.relation.collinearity`, over all "
            f"{col['n_prompts']} training prompts, neutral included, at the reporting layer, a_sum): "
            f"r(alignment, loss reduction) {col['r_loss_reduction']:+.3f}; multiple R of alignment on the trait and "
            f"content parts {col['multiple_r_loss_split']:.3f}; max {col['max_abs_r']:.3f} against the design "
            f"acceptance <= {col['acceptance_abs_r']} ({'met' if col['meets_acceptance'] else 'not met'}) and the "
            f"verdict cap {col['cap_abs_r']}."]
    return "\n".join(out) + "\n"


def design_collinearity(r: dict[str, Any]) -> dict[str, Any]:
    """``stats.relation.collinearity`` over the probe's training prompts (one row per prompt, neutral included):
    alignment = mean cos(-g, v) at the reporting layer, a_sum; loss reduction and its trait and content parts
    against neutral. The max of |r| and the multiple R is what the design acceptance (<= 0.5) reads."""
    L, j, neu = r["layer"], r["positions"].index("a_sum"), r["conditions"]["neutral"]
    rows = []
    for name, d in r["conditions"].items():
        red = neu["mean_loss"] - d["mean_loss"]
        red_c = neu["mean_content_loss"] - d["mean_content_loss"]
        rows.append({"condition": name, "align_pre": d["mean_cos"][L][j], "loss_reduction": red,
                     "loss_reduction_trait": red - red_c, "loss_reduction_content": red_c})
    return {**collinearity(rows), "n_prompts": len(rows)}


def contrasts(conds: dict[str, Any]) -> list[tuple[str, str]]:
    """inoc − neutral, then for every content leak ``leak_<t>``: t − leak_<t> (the loss-matched comparison) and
    leak_<t> − neutral, then inoc_leak_<t> − leak_<t> (trait explanation with the content held fixed)."""
    out = [("inoc", "neutral")]
    for c in conds:
        t = c[len("leak_"):] if c.startswith("leak_") else None
        if t is None:
            continue
        if t in conds:
            out.append((t, c))
        out.append((c, "neutral"))
        if f"inoc_{c}" in conds:
            out.append((f"inoc_{c}", c))
    return out


if __name__ == "__main__":
    print(tables(json.load(open(sys.argv[1]))), end="")
