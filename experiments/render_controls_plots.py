"""The figures of results/allcaps_controls/ (the dial curve, the loss split, Δcos against the trait and content
parts), drawn from its committed JSON alone: ``controls_probe_allcaps.json`` and ``leak.json``.

    python experiments/render_controls_plots.py results/allcaps_controls
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nnsight_inoc.report.figures_run import controls_probe_figures


def main(folder: str) -> None:
    d = Path(folder)
    probe = json.loads((d / "controls_probe_allcaps.json").read_text())
    leak = json.loads((d / "leak.json").read_text()) if (d / "leak.json").is_file() else None
    for name, where in controls_probe_figures(probe, d, leak).items():
        print(f"{name}: {where}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/allcaps_controls")
