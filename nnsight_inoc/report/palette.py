"""One look per condition across every plot of a study, the reading order of conditions, and families.

Why one map: a reader compares plots side by side, so ``inoc`` must be the same colour and marker in
the headline, the cosine-vs-layer plot and the projection plot. :func:`condition_styles` gives each
condition of the study a slot of :func:`style` in reading order (:func:`condition_order`); the
run-folder renderer builds the map once from every condition in the folder and passes it to every figure.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable, Mapping

import matplotlib
import matplotlib.pyplot as plt

from nnsight_inoc.core.artifacts import write_bytes

matplotlib.use("Agg")

# tab20's strong shades first, then its light ones: neighbours in a legend differ in hue.
_COLOURS = [plt.get_cmap("tab20").colors[i] for i in (*range(0, 20, 2), *range(1, 20, 2))]
_MARKERS = "osD^v<>Ph*X"  # 11 markers, coprime with 20 colours: (colour, marker) repeats only after 220
_LINES = ("-", "--", "-.", ":")


def style(i: int) -> dict[str, Any]:
    """Colour, marker and line style of the i-th condition; unique (colour, marker) for i < 220."""
    return {"color": _COLOURS[i % len(_COLOURS)], "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": _LINES[(i // len(_COLOURS)) % len(_LINES)]}

MAIN = ("neutral", "inoc")
ARMS = ("zero_v", "zero_rand", "flip_v", "restore_v")  # the causal arms, shown beside the main conditions
CONTROLS = ("lossmatch", "leak_inoc", "inoc_leak_inoc", "explicit")
CANONICAL = MAIN + ARMS + CONTROLS
FAMILIES = ("main", "loss-matched", "leak factorial", "causal arm", "steering", "variants")


def condition_order(names: Iterable[str]) -> list[str]:
    """neutral, inoc, the causal arms, the controls (lossmatch, leak_inoc, inoc_leak_inoc, explicit),
    then every other condition in first-seen order; each name once."""
    seen = list(dict.fromkeys(names))
    return [c for c in CANONICAL if c in seen] + [c for c in seen if c not in CANONICAL]


def condition_styles(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Condition -> {color, marker, linestyle} for a study's conditions, slots in :func:`condition_order`:
    build it once from every condition of the study and pass it to each plot, so a condition looks the
    same everywhere; up to 20 conditions all differ in colour, and no two share colour and marker (< 220)."""
    return {c: style(i) for i, c in enumerate(condition_order(names))}


def family(name: str) -> str:
    """The family a condition belongs to, from its name alone."""
    if name in ("neutral", "inoc", "explicit"):
        return "main"
    if name == "lossmatch":
        return "loss-matched"
    if name.startswith(("leak_", "inoc_leak_")):
        return "leak factorial"
    if name in ARMS:
        return "causal arm"
    if name.startswith("steer_"):
        return "steering"
    return "variants"


FAMILY_STYLE = {f: {"color": c, "marker": m} for f, c, m in zip(
    FAMILIES, ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e"), "osD^vP")}


def save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def legend_outside(ax: Any, n: int, **kw: Any) -> Any:
    """A legend right of the axes, never over the data (every plot of :mod:`.plots` and the figures use it)."""
    return ax.legend(fontsize=6 if n > 10 else 8, ncol=2 if n > 16 else 1, loc="center left",
                     bbox_to_anchor=(1.01, 0.5), **kw)


def styles_for(names: Iterable[str], styles: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    """The study's map when given (falling back for a name it lacks), else one built from these names."""
    names = list(names)
    base = condition_styles(names)
    return {c: (styles[c] if styles and c in styles else base[c]) for c in names}
