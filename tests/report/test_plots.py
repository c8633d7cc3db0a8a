"""Plots a reader can trust: a distinct look per condition, titles that say which interval, no doubled words."""

from __future__ import annotations

import numpy as np

from nnsight_inoc.report import plots


def test_style_is_distinct_for_many_conditions() -> None:
    looks = [(plots.style(i)["color"], plots.style(i)["marker"]) for i in range(60)]
    assert len(set(looks)) == 60
    assert len({plots.style(i)["color"] for i in range(20)}) == 20  # no colour repeats within 20 conditions
    assert plots.style(0)["color"] != plots.style(1)["color"] and plots.style(0)["marker"] != plots.style(1)["marker"]


def test_undefined_title_says_it_once() -> None:
    assert plots.undefined_title("correlation undefined: a side is constant") == "correlation undefined: a side is constant"
    assert plots.undefined_title("need at least 3 runs") == "correlation undefined: need at least 3 runs"
    title = plots.relation_title({"error": "correlation undefined: x or y is constant"})
    assert title.count("correlation undefined") == 1


def test_relation_title_names_the_interval_over_prompts() -> None:
    rel = {"r": 0.76, "lo": 0.56, "hi": 0.93, "n_runs": 48, "n_groups": 16}
    t = plots.relation_title(rel, {"r": 0.81, "lo": 0.64, "hi": 0.9},
                             {"auroc": 0.98, "lo": 0.9, "hi": 1.0, "threshold": 0.45})
    assert "bootstrap over 16 training prompts" in t and "rank r=+0.81" in t and "AUROC" in t


def test_figures_are_written(tmp_path) -> None:
    rng = np.random.default_rng(0)
    labels = [f"c{i}" for i in range(17) for _ in range(3)]
    x = rng.normal(size=len(labels))
    y = (x > 0).astype(float) * 0.9 + 0.02 * rng.normal(size=len(labels))
    plots.scatter_fit(tmp_path / "a.png", x, y, labels, "x", "y", "title")
    plots.projection_vs_score(tmp_path / "b.png", 100 * y, y, labels, 27, "neutral test prompt")
    curves = {f"c{i}": (np.arange(5.0) * i, np.arange(5.0) * i - 1, np.arange(5.0) * i + 1) for i in range(17)}
    plots.curves_with_ci(tmp_path / "c.png", curves, "y", "title (band: min-max over seeds)")
    plots.monitor_scatter(tmp_path / "d.png", x, y, {"pearson_r": 0.8, "pearson_lo": 0.7, "pearson_hi": 0.9,
                                                     "spearman_r": 0.7, "n": len(x)}, 3, groups=labels,
                          within={"error": "correlation undefined: no spread"})
    assert all((tmp_path / f"{n}.png").stat().st_size > 1000 for n in "abcd")
