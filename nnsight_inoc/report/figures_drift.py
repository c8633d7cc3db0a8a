"""Drift figures a reader can read alone: the headline (drift per condition, seed dots, the verdicts'
intervals) and the projection shift over layers as small multiples.

Plain data in (the finetune summary's rows, drift.json projections), one PNG out. Colours come from
the study's one condition map (:mod:`.palette`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from nnsight_inoc.report.palette import condition_order, legend_outside, save, styles_for
from nnsight_inoc.stats.intervals import mean_ci
from nnsight_inoc.stats.pairing import paired_diffs, sign_flip_p

DRIFT_RANGE = (-1.0, 1.0)  # trait scores are in [0, 1]: a drift (post - pre) or a difference of post scores


def main_drift_key(rows: Sequence[Mapping[str, Any]]) -> str:
    """The verdicts' main drift: the panel mean when every run has it, else the neutral test prompt's."""
    return "drift_panel_score" if rows and all(r.get("drift_panel_score") is not None for r in rows) else "drift_score"


def verdict_pairs(conds: Sequence[str]) -> list[tuple[str, str]]:
    """The contrasts the verdicts read: inoc - neutral (C5), inoc - the loss-matched control (C8: leak_inoc when
    run, else lossmatch), and each causal arm against inoc."""
    out = [("inoc", "neutral")] if {"inoc", "neutral"} <= set(conds) else []
    control = "leak_inoc" if "leak_inoc" in conds else "lossmatch"
    if "inoc" in conds and control in conds:
        out.append(("inoc", control))
    out += [(arm, "inoc") for arm in ("zero_v", "zero_rand", "flip_v", "restore_v") if arm in conds and "inoc" in conds]
    return out


def seed_contrasts(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """{"a-b": {mean, lo, hi, n_seeds, p_sign_flip}}: t-interval over the paired seeds (as the verdicts without a
    panel), for :func:`verdict_pairs`; pairs with fewer than 2 seeds carry no interval."""
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    out = {}
    for a, b in verdict_pairs(conds):
        _, d = paired_diffs(rows, a, b, key)
        if not d or any(x != x for x in d):
            continue
        m, lo, hi, n = mean_ci(d)
        out[f"{a}-{b}"] = {"mean": m, "lo": lo, "hi": hi, "n_seeds": n, "p_sign_flip": sign_flip_p(d)}
    return out


def _clip(lo: float, hi: float) -> tuple[float, float, bool]:
    a, b = max(lo, DRIFT_RANGE[0]), min(hi, DRIFT_RANGE[1])
    return a, b, (a, b) != (lo, hi)


def _points(contrasts: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The contrasts to draw, {name: {mean, lo, hi, n_seeds, p_sign_flip}}: from the finetune summary's block
    (``{"pairs": {"a-b": {estimate, lo, hi, sign_flip_p, n_seeds}}, ...}``, report/contrast_rules.py) or from a
    mapping already in this form (:func:`seed_contrasts`). Before, the summary's block was read as if in this form
    and every contrast was dropped (no key "mean"), so the headline lost its right panel."""
    pairs = contrasts.get("pairs") if isinstance(contrasts.get("pairs"), Mapping) else contrasts
    out = {}
    for k, b in pairs.items():
        if not isinstance(b, Mapping):
            continue
        if "mean" in b:
            out[k] = b
        elif b.get("estimate") is not None and b["estimate"] == b["estimate"]:
            out[k] = {"mean": b["estimate"], "lo": b.get("lo"), "hi": b.get("hi"), "n_seeds": b.get("n_seeds"),
                      "p_sign_flip": b.get("sign_flip_p")}
    return out


def headline_drift(path: Path, rows: Sequence[Mapping[str, Any]], contrasts: Mapping[str, Mapping[str, Any]] | None = None,
                   styles: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Left: per condition, each seed's main drift (dots) and their mean (bar). Right: the paired contrasts
    (``contrasts`` from the finetune summary when given, else t-intervals over seeds computed here), with
    their 95% intervals clipped to [-1, 1] (a note says so). Returns what was drawn (for tests)."""
    key = main_drift_key(rows)
    conds = condition_order(r["condition"] for r in rows)
    sty = styles_for(conds, styles)
    source = "finetune summary" if contrasts else "computed here"
    con = _points(contrasts) if contrasts else seed_contrasts(rows, key)
    con = {k: v for k, v in con.items() if isinstance(v, Mapping) and "mean" in v}
    fig, axes = plt.subplots(1, 2 if con else 1, figsize=(14 if con else 7.5, 4.6), squeeze=False,
                             gridspec_kw={"width_ratios": [max(3, len(conds)), max(4, 2.2 * len(con))]} if con else None)
    ax = axes[0, 0]
    n_dots = 0
    seeds_per = []
    for i, c in enumerate(conds):
        vals = np.array([r[key] for r in rows if r["condition"] == c and r.get(key) is not None], dtype=float)
        seeds_per.append(len(vals))
        jitter = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(len(vals))
        ax.scatter(i + jitter, vals, s=22, color=sty[c]["color"], marker=sty[c]["marker"], edgecolor="k", lw=0.4,
                   zorder=3, label=c)
        n_dots += len(vals)
        if len(vals):
            ax.hlines(vals.mean(), i - 0.32, i + 0.32, color=sty[c]["color"], lw=2.4, zorder=2)
    ax.axhline(0, color="grey", lw=0.7)
    ax.set_xticks(np.arange(len(conds)), conds, rotation=45 if len(conds) > 4 else 0,
                  ha="right" if len(conds) > 4 else "center", fontsize=8)
    what = "mean over the panel of trait-free test prompts" if key == "drift_panel_score" else "neutral test prompt"
    ax.set_ylabel(f"drift in trait score, post - pre ({what})")
    n_txt = (f"{min(seeds_per)}" if min(seeds_per) == max(seeds_per) else f"{min(seeds_per)}-{max(seeds_per)}")
    ax.set_title(f"Drift per training prompt: dots = seeds (n = {n_txt} per condition), bar = mean\n"
                 "> 0: the model shows more of the trait after training", fontsize=9)
    drawn: dict[str, Any] = {"conditions": conds, "n_dots": n_dots, "contrasts": list(con), "clipped": []}
    if con:
        bx = axes[0, 1]
        for j, (name, c) in enumerate(con.items()):
            a = name.split("-", 1)[0]
            st = sty.get(a, {"color": "k", "marker": "o"})
            bx.scatter(j, c["mean"], color=st["color"], marker=st["marker"], s=36, zorder=3, edgecolor="k", lw=0.4)
            if c.get("lo") is not None and c["lo"] == c["lo"]:
                lo, hi, clipped = _clip(c["lo"], c["hi"])
                bx.vlines(j, lo, hi, color=st["color"], lw=2)
                if clipped:
                    drawn["clipped"].append(name)
        bx.axhline(0, color="grey", lw=0.7)
        bx.set_xlim(-0.6, len(con) - 0.4)
        ticks = []
        for k, c in con.items():
            p = c.get("p_sign_flip")
            ticks.append(f"{k.replace('-', ' - ')}\nn = {c.get('n_seeds', '?')} seeds"
                         + (f"\nsign-flip p {p:.2f}" if p is not None else ""))
        bx.set_xticks(np.arange(len(con)), ticks, fontsize=7)
        bx.set_ylabel("paired difference in drift (a - b)")
        note = "; clipped to [-1, 1], the range of a score difference" if drawn["clipped"] else ""
        bx.set_title(f"Contrasts the verdicts read ({source}): mean and 95% t-interval\nover paired seeds{note}; "
                     "< 0: a drifts less", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()  # the conditions, beside the last panel
    legend_outside(axes[0, -1], len(conds), handles=handles, labels=labels)
    fig.tight_layout()
    save(fig, path)
    return drawn


def projection_shift_panels(path: Path, by_condition: Mapping[str, Sequence[Sequence[float]]], layer: int | None = None,
                            styles: Mapping[str, Mapping[str, Any]] | None = None, ncol: int = 4) -> dict[str, Any]:
    """Small multiples: one panel per condition of the post - pre final-prompt projection onto v against layer,
    one thin line per seed and the mean thick, on a shared y axis (so panels compare); the reporting layer dotted."""
    conds = condition_order(by_condition)
    sty = styles_for(conds, styles)
    nrow = math.ceil(len(conds) / ncol)
    fig, axes = plt.subplots(nrow, min(ncol, len(conds)), figsize=(3.1 * min(ncol, len(conds)), 2.4 * nrow + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    lines = 0
    for k, c in enumerate(conds):
        ax = axes[k // ncol, k % ncol]
        x = np.asarray(by_condition[c], dtype=float)  # (seeds, L)
        L = np.arange(x.shape[1])
        for s in x:
            ax.plot(L, s, color=sty[c]["color"], lw=0.6, alpha=0.5)
            lines += 1
        ax.plot(L, x.mean(0), color=sty[c]["color"], marker=sty[c]["marker"], markevery=max(1, len(L) // 6),
                markersize=3.5, lw=1.6)
        ax.axhline(0, color="grey", lw=0.6)
        if layer is not None:
            ax.axvline(layer, color="grey", ls=":", lw=0.8)
        ax.set_title(f"{c} (n = {len(x)} seeds)", fontsize=8, color=sty[c]["color"])
        ax.tick_params(labelsize=7)
    for k in range(len(conds), nrow * axes.shape[1]):
        axes[k // ncol, k % ncol].set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("layer", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("post - pre projection onto v", fontsize=7)
    rep = f"; dotted: reporting layer {layer}" if layer is not None else ""
    fig.suptitle("Drift in the final-prompt projection onto v, neutral test prompt (thin: seeds, thick: mean; "
                 f"descriptive, no interval){rep}", fontsize=9)
    fig.tight_layout()
    save(fig, path)
    return {"conditions": conds, "seed_lines": lines}
