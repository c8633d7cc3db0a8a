"""Alignment and loss figures a reader can read alone: cos(-g, v) over layers, the loss reduction split
into trait and content parts, the content-leak dial, and the change in alignment against both parts.

Plain data in (the align summary's blocks, ``leak.json``, the controls probe's per-condition numbers),
one PNG out. Sign convention in every title: cos(-g, v) > 0 = a step moves activations toward the trait;
loss reduction = neutral's loss minus the condition's (nats), > 0 = the prompt explains the data better.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from nnsight_inoc.report.palette import FAMILY_STYLE, condition_order, family, legend_outside, save, styles_for

PARTS = (("total", "total", "#444444"), ("trait", "trait part", "#d62728"), ("content", "content part", "#1f77b4"))


def cos_vs_layer(path: Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float] | None, Sequence[float] | None]],
                 layer: int | None, position: str, source: str,
                 styles: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Mean cos(-g, v) per layer per condition, a band where an interval is given (``source`` says which and
    over what n), the reporting layer dotted."""
    conds = condition_order(curves)
    sty = styles_for(conds, styles)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bands = 0
    for c in conds:
        est, lo, hi = curves[c]
        x = np.arange(len(est))
        ax.plot(x, est, label=c, color=sty[c]["color"], marker=sty[c]["marker"], linestyle=sty[c]["linestyle"],
                markersize=3.5, markevery=max(1, len(x) // 8), lw=1.2)
        if lo is not None and hi is not None:
            ax.fill_between(x, lo, hi, color=sty[c]["color"], alpha=0.18)
            bands += 1
    ax.axhline(0, color="grey", lw=0.7)
    if layer is not None:
        ax.axvline(layer, color="grey", ls=":", lw=0.9, label=f"reporting layer {layer}")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean cos(-g, v) (unitless)")
    ax.set_title(f"Gradient alignment with the trait direction at {position}, per layer\n{source}\n"
                 "cos(-g, v) > 0: a gradient step moves the activation toward the trait", fontsize=8)
    legend_outside(ax, len(conds) + 1)
    save(fig, path)
    return {"conditions": conds, "bands": bands}


def loss_split_bars(path: Path, parts: Mapping[str, Mapping[str, Mapping[str, float]]], n: int | str,
                    interval: str = "95% paired percentile bootstrap over examples") -> dict[str, Any]:
    """Side-by-side bars per condition: the loss reduction vs neutral (total) and its trait and content parts,
    nats, with error bars. ``parts[c][k]`` = {mean, lo, hi} for k in total, trait, content."""
    conds = condition_order(parts)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.62 * len(conds) + 2.5), 4.4))
    x = np.arange(len(conds))
    w = 0.27
    for j, (k, label, colour) in enumerate(PARTS):
        m = np.array([parts[c][k]["mean"] for c in conds])
        err = np.array([[parts[c][k]["mean"] - parts[c][k]["lo"], parts[c][k]["hi"] - parts[c][k]["mean"]]
                        for c in conds]).T
        ax.bar(x + (j - 1) * w, m, width=w, yerr=err, capsize=2, color=colour, label=label,
               error_kw={"lw": 0.8})
    ax.axhline(0, color="grey", lw=0.7)
    ax.set_xticks(x, conds, rotation=45 if len(conds) > 4 else 0, ha="right" if len(conds) > 4 else "center",
                  fontsize=8)
    ax.set_ylabel("loss reduction vs neutral (nats)")
    ax.set_title("SFT loss reduction per training prompt, split into trait and content parts\n"
                 f"reduction = L(neutral) - L(prompt), > 0: the prompt explains the data better; content = loss of the "
                 f"untraited answer, trait = total - content\nn = {n} examples, error bars: {interval}", fontsize=8)
    legend_outside(ax, 3)
    save(fig, path)
    return {"conditions": conds}


def dial_curve(path: Path, curve: Sequence[Mapping[str, Any]], targets: Mapping[str, Mapping[str, Any]],
               n: int | str, tolerance: float | None = None) -> dict[str, Any]:
    """The content-leak dial: loss reduction against quoted words (log x) with its CIs; each target's reduction
    as a horizontal line (its CI shaded) and the matched word count as a vertical line."""
    words = np.array([c["words"] for c in curve], dtype=float)
    m = np.array([c["reduction"]["mean"] for c in curve])
    lo = np.array([c["reduction"]["lo"] for c in curve])
    hi = np.array([c["reduction"]["hi"] for c in curve])
    fig, ax = plt.subplots(figsize=(8, 4.4))
    ax.errorbar(words, m, yerr=[m - lo, hi - m], color="k", marker="o", ms=4, capsize=2, lw=1.1,
                label="leak after the neutral prompt")
    colours = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
    for i, (name, t) in enumerate(targets.items()):
        col = colours[i % len(colours)]
        r = t["reduction"]
        ax.axhline(r["mean"], color=col, lw=1, ls="--", label=f"target {name}: {r['mean']:+.3f} nats (CI shaded)")
        ax.axhspan(r["lo"], r["hi"], color=col, alpha=0.12)
        if t.get("words") is not None:
            ax.axvline(t["words"], color=col, lw=0.9, ls=":",
                       label=f"matched at {t['words']} words" + ("" if t.get("matched", True) else " (NOT matched)"))
    ax.axhline(0, color="grey", lw=0.7)
    ax.set_xscale("log")
    shown, last = [], -1.0
    for w in words:  # label a tick only when it is clear of the last labelled one (log spacing)
        shown.append(f"{int(w)}" if not shown or np.log10(w) - last > 0.07 else "")
        last = np.log10(w) if shown[-1] else last
    ax.set_xticks(words, shown, fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("words of the model's own untraited answer quoted in the prompt (log scale)")
    ax.set_ylabel("loss reduction vs neutral (nats)")
    tol = f"; a match is within +-{tolerance:.0%} of the target's reduction" if tolerance is not None else ""
    ax.set_title("The content-leak dial: how much quoting the answer lowers the SFT loss\n"
                 f"n = {n} examples, 95% percentile bootstrap CIs over examples{tol}", fontsize=8)
    legend_outside(ax, 2 + 2 * len(targets))
    save(fig, path)
    return {"n_points": len(curve), "targets": list(targets)}


_LABEL_AT = {"inoc": (-5, -10), "explicit": (5, 3), "lossmatch": (-5, 4), "leak_inoc": (-5, 4),
             "inoc_leak_inoc": (5, -9)}  # the conditions named on the plot, offsets that keep neighbours apart


def _r(x: np.ndarray, y: np.ndarray) -> str:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return "r undefined"
    return f"Pearson r = {np.corrcoef(x, y)[0, 1]:+.2f}"


def dcos_vs_parts(path: Path, points: Mapping[str, Mapping[str, float]], layer: int | str, position: str,
                  n: int | str) -> dict[str, Any]:
    """Two panels: Δcos (condition - neutral) against the trait part and against the content part of the loss
    reduction, one point per training prompt, coloured and shaped by family (from the name)."""
    conds = condition_order(points)
    fams = [family(c) for c in conds]
    dc = np.array([points[c]["dcos"] for c in conds])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
    for ax, part, label in zip(axes, ("trait", "content"), ("trait part", "content part")):
        xs = np.array([points[c][part] for c in conds])
        for f in dict.fromkeys(fams):
            sel = np.array([g == f for g in fams])
            ax.scatter(xs[sel], dc[sel], s=34, edgecolor="k", lw=0.4, label=f"{f} ({int(sel.sum())})",
                       **FAMILY_STYLE[f])
        for c, xv, yv in zip(conds, xs, dc):
            if c in _LABEL_AT:
                ax.annotate(c, (xv, yv), textcoords="offset points", xytext=_LABEL_AT[c], fontsize=6,
                            ha="right" if _LABEL_AT[c][0] < 0 else "left")
        ax.axhline(0, color="grey", lw=0.6)
        ax.axvline(0, color="grey", lw=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.set_xlabel(f"{label} of the loss reduction vs neutral (nats)")
        ax.set_title(f"against the {label}: {_r(xs, dc)} over {len(conds)} prompts (descriptive)", fontsize=8)
    axes[0].set_ylabel(f"Δcos(-g, v) vs neutral (layer {layer}, {position})")
    fig.suptitle(f"Change in alignment against the two parts of the loss reduction, n = {n} examples per prompt\n"
                 "Δcos < 0: the prompt turns the gradient away from the trait", fontsize=9)
    legend_outside(axes[1], len(set(fams)))
    fig.tight_layout()
    save(fig, path)
    return {"conditions": conds, "families": sorted(set(fams))}
