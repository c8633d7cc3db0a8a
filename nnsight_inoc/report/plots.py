"""Matplotlib figures for the extract, align and drift stages (Agg backend, PNG files).

Every condition gets its own colour *and* marker (:func:`style`), so 16 or more conditions never
share a look (matplotlib's default cycle repeats after 10 colours). Titles name the interval they
show; where a verdict uses an interval over training prompts, the plot shows that one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnsight_inoc.core.artifacts import write_bytes
from nnsight_inoc.measures.alignment import SIGN_NOTE
from nnsight_inoc.report.palette import legend_outside, style, styles_for  # noqa: F401 (style re-exported)
from nnsight_inoc.stats.relation import monotone_fit

matplotlib.use("Agg")


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def undefined_title(error: str | None) -> str:
    """'correlation undefined: <why>' said once, whether or not the error already starts with it."""
    err = (error or "no data").strip()
    return err if err.startswith("correlation undefined") else f"correlation undefined: {err}"


def _legend(ax: Any, n: int) -> None:
    """Right of the axes, never over the data; only entries that were drawn (matplotlib keeps a handle per label)."""
    legend_outside(ax, n)


def projection_hist(path: Path, promote: np.ndarray, suppress: np.ndarray, layer: int, trait: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.histogram_bin_edges(np.concatenate([promote, suppress]), bins=30)
    ax.hist(suppress, bins=bins, alpha=0.6, label="suppress prompt")
    ax.hist(promote, bins=bins, alpha=0.6, label="promote prompt")
    ax.set_xlabel(f"projection onto v (layer {layer}, final prompt token)")
    ax.set_ylabel("held-out prompts")
    ax.set_title(f"{trait}: held-out projections, promote vs suppress")
    legend_outside(ax, 2)
    _save(fig, path)


def monitor_scatter(path: Path, proj: np.ndarray, score: np.ndarray, corr: Mapping[str, Any], layer: int,
                    groups: Sequence[str] | None = None, within: Mapping[str, Any] | None = None) -> None:
    """Projection vs trait score per answer, coloured by monitoring system prompt when ``groups`` is given;
    the title gives the pooled r (pair bootstrap) and the within-prompt r (CI over prompts)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ok = np.isfinite(score)
    labels = list(groups) if groups is not None else ["all"] * len(score)
    for i, lab in enumerate(dict.fromkeys(labels)):
        sel = ok & np.array([g == lab for g in labels])
        st = style(i)
        ax.scatter(proj[sel], score[sel], s=9, alpha=0.6, color=st["color"], marker=st["marker"],
                   label=lab if len(lab) <= 40 else lab[:37] + "...")
    ax.set_xlabel(f"final-prompt-token projection onto v (layer {layer})")
    ax.set_ylabel("trait score of the answer")
    title = (f"pooled Pearson r={corr['pearson_r']:.2f} [{corr['pearson_lo']:.2f}, {corr['pearson_hi']:.2f}] "
             f"(pair bootstrap), Spearman={corr['spearman_r']:.2f}, n={corr['n']}")
    if within is not None:
        title += ("\nwithin-prompt r=" + (f"{within['r']:.2f} [{within['lo']:.2f}, {within['hi']:.2f}] "
                                          f"(bootstrap over {within['n_groups']} prompts)" if "r" in within
                                          else undefined_title(within.get("error"))))
    ax.set_title(title, fontsize=8)
    if groups is not None:
        _legend(ax, len(set(labels)))
    _save(fig, path)


def separation_vs_layer(
    path: Path, auroc: np.ndarray, d: np.ndarray, r: np.ndarray, positions: Sequence[str], layer: int
) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    x = np.arange(auroc.shape[0])
    for j, p in enumerate(positions):
        axes[0].plot(x, auroc[:, j], label=p)
        axes[1].plot(x, d[:, j], label=p)
    axes[2].plot(x, r, color="k", label="Pearson r (final prompt)")
    for ax, t in zip(axes, ("held-out AUROC", "held-out Cohen's d", "monitoring r")):
        ax.axvline(layer, color="grey", ls=":")
        ax.set_xlabel("layer")
        ax.set_title(t)
    axes[0].axhline(0.95, color="r", ls="--", lw=0.8)
    axes[2].axhline(0.6, color="r", ls="--", lw=0.8)
    (h0, l0), (h2, l2) = axes[0].get_legend_handles_labels(), axes[2].get_legend_handles_labels()
    legend_outside(axes[2], len(l0) + len(l2), handles=h0 + h2, labels=l0 + l2)  # right of the last panel: over none
    _save(fig, path)


def curves_with_ci(
    path: Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    ylabel: str,
    title: str,
    hline: float | None = 0.0,
    logy: bool = False,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """One line per condition over layers, with a shaded band (the title says which interval); each condition
    its study-wide look (``styles``: :func:`~.palette.condition_styles` of the study; default, these names')."""
    fig, ax = plt.subplots(figsize=(7.5 if len(curves) > 10 else 7, 4))
    sty = styles_for(curves, styles)
    for name, (est, lo, hi) in curves.items():
        x = np.arange(len(est))
        st = sty[name]
        ax.plot(x, est, label=name, color=st["color"], marker=st["marker"], linestyle=st["linestyle"],
                markersize=3.5, markevery=max(1, len(x) // 7), lw=1.1)
        ax.fill_between(x, lo, hi, alpha=0.12 if len(curves) > 6 else 0.2, color=st["color"])
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    _legend(ax, len(curves))
    _save(fig, path)


def loss_by_condition(path: Path, losses: Mapping[str, tuple[float, float, float]],
                      styles: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    names = list(losses)
    sty = styles_for(names, styles)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(names)), 3.6))
    est = np.array([losses[n][0] for n in names])
    err = np.array([[losses[n][0] - losses[n][1], losses[n][2] - losses[n][0]] for n in names]).T
    ax.bar(np.arange(len(names)), est, yerr=err, capsize=4, color=[sty[n]["color"] for n in names])
    ax.set_xticks(np.arange(len(names)), names, rotation=45 if len(names) > 5 else 0, ha="right" if len(names) > 5
                  else "center")
    ax.set_ylabel("mean SFT loss (completion tokens)")
    ax.set_title("loss per training condition (95% bootstrap CI over examples)")
    _save(fig, path)


def null_panel(path: Path, delta_v: np.ndarray, delta_r: np.ndarray, p_adj: np.ndarray, label: str) -> None:
    """Observed change in cosine for v vs the random-direction distribution, per layer."""
    fig, ax = plt.subplots(figsize=(8, 4))
    L = len(delta_v)
    ax.violinplot([delta_r[l] for l in range(L)], positions=np.arange(L), showextrema=False)
    ax.scatter(np.arange(L), delta_v, color="r", zorder=3, s=14, label="v (trait direction)")
    for l in range(L):
        if p_adj[l] < 0.05:
            ax.annotate("*", (l, delta_v[l]), textcoords="offset points", xytext=(0, 5), ha="center")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"change in mean cos(-g, dir): {label}")
    ax.set_title(f"{label} vs {delta_r.shape[1]} random directions (* exact null p, Holm-adjusted, < 0.05)\n{SIGN_NOTE}", fontsize=8)
    legend_outside(ax, 1)
    _save(fig, path)


def pre_post_bars(path: Path, by_cond: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> None:
    """Mean trait score before and after training per condition; whiskers = min-max over seeds."""
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(by_cond)), 3.8))
    x = np.arange(len(by_cond))
    for k, (label, off) in enumerate((("pre", -0.2), ("post", 0.2))):
        vals = [np.asarray(v[k], dtype=float) for v in by_cond.values()]
        m = np.array([v.mean() for v in vals])
        err = np.array([[m[i] - v.min(), v.max() - m[i]] for i, v in enumerate(vals)]).T
        ax.bar(x + off, m, width=0.4, yerr=err, capsize=3, label=label)
    ax.set_xticks(x, list(by_cond), rotation=45, ha="right")
    ax.set_ylabel("mean trait score, neutral test prompt")
    ax.set_title("trait expression before and after LoRA training (whiskers: min-max over seeds, descriptive)",
                 fontsize=9)
    legend_outside(ax, 2)
    _save(fig, path)


def relation_title(rel: Mapping[str, Any] | None, rank: Mapping[str, Any] | None = None,
                   auroc: Mapping[str, Any] | None = None) -> str:
    """The alignment-vs-drift title: the verdicts' r with its CI over training prompts (cluster bootstrap),
    the rank r and the high-drift AUROC beside it; an undefined r is said once."""
    if not rel or "r" not in rel:
        return undefined_title((rel or {}).get("error"))
    out = (f"r={rel['r']:+.2f} [{rel['lo']:+.2f}, {rel['hi']:+.2f}] (bootstrap over {rel['n_groups']} training "
           f"prompts, {rel['n_runs']} runs)")
    if rank and "r" in rank:
        out += f"; rank r={rank['r']:+.2f} [{rank['lo']:+.2f}, {rank['hi']:+.2f}]"
    if auroc and "auroc" in auroc:
        out += f"\nAUROC for drift >= {auroc['threshold']:.2f}: {auroc['auroc']:.2f} [{auroc['lo']:.2f}, {auroc['hi']:.2f}]"
    return out


def scatter_fit(path: Path, x: Sequence[float], y: Sequence[float], labels: Sequence[str], xlabel: str,
                ylabel: str, title: str, styles: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """One point per run (small) and per condition mean (large, its own colour and marker), the
    isotonic fit over the condition means (the shape of a step-like relation), and the least-squares
    line over runs (dashed, for reference)."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    conds = list(dict.fromkeys(labels))
    sty = styles_for(conds, styles)
    mx, my = [], []
    for lab in conds:
        sel = np.array([l == lab for l in labels])
        st = sty[lab]
        ax.scatter(xa[sel], ya[sel], s=10, alpha=0.45, color=st["color"], marker=st["marker"])
        mx.append(float(np.nanmean(xa[sel])))
        my.append(float(np.nanmean(ya[sel])))
        ax.scatter(mx[-1], my[-1], s=46, color=st["color"], marker=st["marker"], edgecolor="k", lw=0.5, label=lab)
    ok = np.isfinite(xa) & np.isfinite(ya)
    if ok.sum() >= 2 and np.ptp(xa[ok]) > 0:
        b, a = np.polyfit(xa[ok], ya[ok], 1)
        xs = np.linspace(xa[ok].min(), xa[ok].max(), 50)
        ax.plot(xs, a + b * xs, color="grey", lw=0.8, ls="--", label="least squares (runs)")
    if len(conds) >= 2 and np.ptp(np.asarray(mx)[np.isfinite(mx)]) > 0:
        fx, fy, inc = monotone_fit(mx, my)
        ax.step(fx, fy, where="mid", color="k", lw=1.4,
                label=f"isotonic fit ({'increasing' if inc else 'decreasing'}, condition means)")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend(ax, len(conds) + 2)
    _save(fig, path)


def projection_vs_score(path: Path, proj: Sequence[float], score: Sequence[float], labels: Sequence[str],
                        layer: int, test_prompt: str, styles: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Per run: drift in the final-prompt projection on v against drift in the trait score (both post - pre,
    under one test prompt): does the representation move with the behaviour?"""
    pa, sa = np.asarray(proj, dtype=float), np.asarray(score, dtype=float)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sty = styles_for(dict.fromkeys(labels), styles)
    for lab in sty:
        sel = np.array([l == lab for l in labels])
        st = sty[lab]
        ax.scatter(sa[sel], pa[sel], s=22, color=st["color"], marker=st["marker"], label=lab)
    ok = np.isfinite(pa) & np.isfinite(sa)
    r = (f"Pearson r over runs = {np.corrcoef(sa[ok], pa[ok])[0, 1]:+.2f} (n = {int(ok.sum())}; descriptive)"
         if ok.sum() >= 3 and np.ptp(sa[ok]) > 0 and np.ptp(pa[ok]) > 0 else undefined_title("a side is constant"))
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel(f"drift in trait score ({test_prompt})")
    ax.set_ylabel(f"drift in projection onto v (layer {layer}, final prompt)")
    ax.set_title(f"per run: representation vs behaviour drift\n{r}", fontsize=8)
    _legend(ax, len(set(labels)))
    _save(fig, path)
