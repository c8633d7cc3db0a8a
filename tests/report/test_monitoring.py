"""Monitoring within system prompts: from the extract summary, or from the published monitoring.csv."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from nnsight_inoc.core.artifacts import read_json
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.report.monitoring import monitoring_within, read_monitoring_table, within_prompt_summary
from tests._paths import ROOT

ALLCAPS = ROOT / "results" / "allcaps"


def test_published_table_gives_the_within_prompt_r() -> None:
    extract = read_json(RunLayout(ALLCAPS).extract_summary)
    config = tomllib.loads(RunLayout(ALLCAPS).config.read_text())
    out = monitoring_within(ALLCAPS, extract, config)
    proj, scores, idx = read_monitoring_table(RunLayout(ALLCAPS))
    layer = extract["chosen"]["layer"]
    ok = np.isfinite(scores)
    p, s, g = proj[ok, layer], scores[ok], idx[ok]
    pc = p - np.array([p[g == k].mean() for k in g])
    sc = s - np.array([s[g == k].mean() for k in g])
    assert out["chosen"]["r"] == pytest.approx(np.corrcoef(pc, sc)[0, 1])
    assert out["chosen"]["n_groups"] == len(extract["monitoring"]["system_prompts"])
    assert out["chosen"]["r"] < extract["chosen"]["pearson_r"]  # the pooled r mostly compares the prompts
    assert out["threshold"] == 0.6 and out["passes"] is False and "monitoring.csv" in out["source"]
    assert len(out["by_layer"]) == proj.shape[1]


def test_summary_block_is_used_when_present_and_errors_are_reported() -> None:
    block = {"chosen": {"r": 0.5}, "by_layer": [], "threshold": 0.6, "passes": False}
    out = monitoring_within("/nonexistent", {"monitoring": {"within_prompt": block}}, {})
    assert out["chosen"]["r"] == 0.5 and out["source"] == "extract summary"
    flat = within_prompt_summary(np.ones((6, 2)), np.arange(6.0), [0, 0, 0, 1, 1, 1], 1, n_boot=10, rng=0)
    assert "error" in flat["chosen"] and flat["passes"] is None and flat["by_layer"] == [None, None]
    with pytest.raises(FileNotFoundError, match="monitoring.csv"):
        monitoring_within("/nonexistent", {"monitoring": {}, "chosen": {"layer": 0}}, {})
