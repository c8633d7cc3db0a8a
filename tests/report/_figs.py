"""Capture a figure before it is saved, to check what it shows (legend entries, ticks, overlap)."""

from __future__ import annotations

from typing import Any

from nnsight_inoc.report import palette


class Captured:
    def __init__(self) -> None:
        self.figs: list[Any] = []

    def __call__(self, fig: Any, path: Any) -> None:
        fig.canvas.draw()
        self.figs.append(fig)
        palette.save(fig, path)


def capture(monkeypatch: Any, module: Any) -> Captured:
    cap = Captured()
    monkeypatch.setattr(module, "save", cap)
    return cap


def legend_texts(fig: Any) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def legend_clear_of_axes(fig: Any) -> bool:
    """Every legend's box lies outside every visible axes' box (so it cannot cover data)."""
    r = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        lb = leg.get_window_extent(r)
        for other in fig.axes:
            if other.get_visible() and lb.overlaps(other.get_window_extent(r)):
                return False
    return True
