"""Summary schemas: every published summary has the keys its schema requires; a foreign file is named."""

from __future__ import annotations

import json

import pytest

from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.core.schema import (
    AlignSummary,
    DriftRecord,
    DriftSummary,
    ExtractSummary,
    LossMatch,
    ProvenanceRecord,
    TrainRecord,
    read_checked,
    require_keys,
)
from tests._paths import ROOT


@pytest.mark.parametrize("study", ["allcaps", "spanish", "politeness"])
def test_published_summaries_match_their_schemas(study):
    r = RunLayout(ROOT / "results" / study)
    for path, schema in ((r.extract_summary, ExtractSummary), (r.align_summary, AlignSummary),
                         (r.lossmatch, LossMatch), (r.summary(steering=False), DriftSummary),
                         (r.provenance, ProvenanceRecord)):
        read_checked(path, schema)
    for t in r.trained_runs():
        read_checked(t, TrainRecord)
        drift = t.parent / "drift.json"
        if drift.is_file():
            read_checked(drift, DriftRecord)


def test_missing_keys_are_named_with_the_file(tmp_path):
    path = tmp_path / "align_summary.json"
    path.write_text(json.dumps({"layer": 3}))
    with pytest.raises(ValueError, match=r"align_summary.json: not a AlignSummary \(missing keys \['conditions'"):
        read_checked(path, AlignSummary)
    with pytest.raises(ValueError, match="expected a JSON object"):
        require_keys([1, 2], AlignSummary, "x.json")
    with pytest.raises(FileNotFoundError, match="missing artifact"):
        read_checked(tmp_path / "nope.json", AlignSummary)
    require_keys({k: None for k in LossMatch.__required_keys__}, LossMatch, "lm.json")  # optional keys may be absent
