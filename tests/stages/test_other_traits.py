"""The other traits' directions file: every registered trait but the study's own, reused while its key holds and
rebuilt when a part of the key changes (the reads themselves are checked end to end in test_align_issue22_e2e)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

import nnsight_inoc.stages.other_traits as OT
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.data.traits import registered_traits


def _study(tmp_path, position="final_prompt", sha="abc"):
    return SimpleNamespace(cfg=SimpleNamespace(align=SimpleNamespace(direction_position=position)),
                           trait=SimpleNamespace(name="allcaps"), loaded=SimpleNamespace(sha256=sha, name="m"),
                           splits=SimpleNamespace(sha256=lambda: "s"), layout=RunLayout(tmp_path))


def test_written_once_and_reused_by_key(tmp_path, monkeypatch):
    calls: list[tuple[str, str]] = []

    def fake(study, trait, position):
        calls.append((trait.name, position))
        return torch.nn.functional.normalize(torch.ones(2, 4), dim=-1)

    monkeypatch.setattr(OT, "trait_direction", fake)
    blob = OT.other_trait_directions(_study(tmp_path))
    others = [n for n in registered_traits() if n != "allcaps"]
    assert sorted(blob["v"]) == sorted(others) and sorted(c[0] for c in calls) == sorted(others)
    assert (tmp_path / "extract" / "other_directions.pt").is_file()
    OT.other_trait_directions(_study(tmp_path))
    assert len(calls) == len(others)  # reused
    OT.other_trait_directions(_study(tmp_path, sha="other model"))
    assert len(calls) == 2 * len(others)  # another model: rebuilt
    blob = OT.other_trait_directions(_study(tmp_path, position="response_mean"))
    assert blob["position"] == "response_mean" and calls[-1][1] == "response_mean"
