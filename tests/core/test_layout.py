"""The run-folder layout: the published results' file names, built in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnsight_inoc.core.layout import ALIGN_PLOTS, DRIFT_PLOTS, EXTRACT_PLOTS, RunLayout, run_name
from tests._paths import ROOT


def test_paths_are_the_published_names(tmp_path):
    r = RunLayout(tmp_path)
    assert r.config == tmp_path / "config.toml" and r.provenance == tmp_path / "provenance.json"
    assert r.worker_provenance("g0w1") == tmp_path / "provenance.workerg0w1.json"
    assert r.directions == tmp_path / "extract" / "directions.pt"
    assert r.other_directions == tmp_path / "extract" / "other_directions.pt"
    assert r.align_condition("inoc") == tmp_path / "align" / "cond_inoc.pt"
    assert r.lossmatch == tmp_path / "align" / "lossmatch.json"
    run = r.run("inoc", 2)
    assert run.folder == tmp_path / "finetune" / "inoc_seed2" == tmp_path / "finetune" / run_name("inoc", 2)
    assert (run.train_json.name, run.drift_json.name, run.adapter.name) == ("train.json", "drift.json", "adapter")
    assert r.summary(steering=False).name == "finetune_summary.json"
    assert r.summary(steering=True).name == "steering_summary.json"
    assert [p.name for p in r.drift_plots(True)][0] == "steering_projection_shift_vs_layer.png"
    assert r.stage_marker("align") == tmp_path / "stages" / "align.json"
    assert r.experiment_output("x") == tmp_path / "experiments" / "x.json"


@pytest.mark.parametrize("study", ["allcaps", "spanish", "politeness"])
def test_published_results_hold_the_files_the_layout_names(study):
    """What the report reads exists under the layout's names in every published study."""
    r = RunLayout(ROOT / "results" / study)
    for p in (r.config, r.provenance, r.data_card, r.extract_summary, r.align_summary, r.lossmatch,
              r.summary(steering=False), r.report_md, r.report_html):
        assert p.is_file(), p
    assert all((r.extract_dir / n).is_file() for n in EXTRACT_PLOTS)
    assert all((r.align_dir / n).is_file() for n in ALIGN_PLOTS)
    assert all(p.is_file() for p in r.drift_plots(steering=False))
    assert r.trained_runs() and all(Path(p).parent.parent == r.finetune_dir for p in r.trained_runs())
    assert len(DRIFT_PLOTS) == 3
