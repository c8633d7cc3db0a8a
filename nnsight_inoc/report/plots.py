"""Matplotlib figures for the extract and align stages (Agg backend, PNG files)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnsight_inoc.core.artifacts import write_bytes
from nnsight_inoc.measures.alignment import SIGN_NOTE

matplotlib.use("Agg")


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def projection_hist(path: Path, promote: np.ndarray, suppress: np.ndarray, layer: int, trait: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.histogram_bin_edges(np.concatenate([promote, suppress]), bins=30)
    ax.hist(suppress, bins=bins, alpha=0.6, label="suppress prompt")
    ax.hist(promote, bins=bins, alpha=0.6, label="promote prompt")
    ax.set_xlabel(f"projection onto v (layer {layer}, final prompt token)")
    ax.set_ylabel("held-out prompts")
    ax.set_title(f"{trait}: held-out projections, promote vs suppress")
    ax.legend()
    _save(fig, path)


def monitor_scatter(path: Path, proj: np.ndarray, score: np.ndarray, corr: Mapping[str, Any], layer: int) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = np.isfinite(score)
    ax.scatter(proj[ok], score[ok], s=8, alpha=0.5)
    ax.set_xlabel(f"final-prompt-token projection onto v (layer {layer})")
    ax.set_ylabel("trait score of the answer")
    ax.set_title(
        f"monitoring: Pearson r={corr['pearson_r']:.2f} [{corr['pearson_lo']:.2f}, {corr['pearson_hi']:.2f}], "
        f"Spearman={corr['spearman_r']:.2f}, n={corr['n']}"
    )
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
    axes[0].legend(fontsize=7)
    _save(fig, path)


def curves_with_ci(
    path: Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    ylabel: str,
    title: str,
    hline: float | None = 0.0,
    logy: bool = False,
) -> None:
    """One line per condition over layers, with a shaded 95% CI band."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (est, lo, hi) in curves.items():
        x = np.arange(len(est))
        ax.plot(x, est, label=name)
        ax.fill_between(x, lo, hi, alpha=0.2)
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)


def loss_by_condition(path: Path, losses: Mapping[str, tuple[float, float, float]]) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(losses)
    est = np.array([losses[n][0] for n in names])
    err = np.array([[losses[n][0] - losses[n][1], losses[n][2] - losses[n][0]] for n in names]).T
    ax.bar(names, est, yerr=err, capsize=4)
    ax.set_ylabel("mean SFT loss (completion tokens), 95% CI")
    ax.set_title("loss per training condition")
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
    ax.legend(fontsize=8)
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
    ax.set_title("trait expression before and after LoRA training")
    ax.legend()
    _save(fig, path)


def scatter_fit(path: Path, x: Sequence[float], y: Sequence[float], labels: Sequence[str], xlabel: str,
                ylabel: str, corr: Mapping[str, Any]) -> None:
    """Alignment vs drift, one point per run, with the least-squares line and r in the title."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colors = plt.get_cmap("tab20").colors
    markers = "osD^v<>P"
    for i, lab in enumerate(dict.fromkeys(labels)):  # distinct colour and marker per condition, up to 20 x 8
        sel = np.array([l == lab for l in labels])
        ax.scatter(xa[sel], ya[sel], s=22, label=lab, color=colors[i % 20], marker=markers[(i // 10) % len(markers)])
    ok = np.isfinite(xa) & np.isfinite(ya)
    if ok.sum() >= 2 and np.ptp(xa[ok]) > 0:
        b, a = np.polyfit(xa[ok], ya[ok], 1)
        xs = np.linspace(xa[ok].min(), xa[ok].max(), 50)
        ax.plot(xs, a + b * xs, color="k", lw=1)
    r = corr.get("pearson_r")
    title = (f"Pearson r={r:.2f} [{corr['pearson_lo']:.2f}, {corr['pearson_hi']:.2f}], "
             f"Spearman={corr['spearman_r']:.2f}, n={corr['n']}") if r is not None and "error" not in corr \
        else f"correlation undefined: {corr.get('error', 'no data')}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6, ncol=2)
    _save(fig, path)
