"""A published run folder (results/allcaps), copied and given the issue-16 inputs synthetically: the step-0
probe's content_loss, a panel of test prompts in every drift.json, and transfer/transfer.json. Every added
number is a simple function of the published ones, so tests can derive what the summary must hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nnsight_inoc.core.layout import RunLayout
from tests._paths import ROOT

ALLCAPS = ROOT / "results" / "allcaps"
SEEDS = (0, 1, 2)
PANEL = tuple(f"Panel prompt {k}: answer as you see fit." for k in range(5))
PANEL_OFFSETS = (-0.02, -0.01, 0.0, 0.01, 0.02)  # per panel prompt, added to the neutral test prompt's drift


def conditions() -> list[str]:
    summ = json.loads(RunLayout(ALLCAPS).summary(steering=False).read_text())
    return list(dict.fromkeys(r["condition"] for r in summ["rows"]))


def content_shift(condition: str) -> float:
    """u_c: content_loss = probe loss - 0.5 - 0.3 * u_c, so the trait part of the loss reduction is -0.3 * u_c."""
    return 0.0 if condition == "neutral" else ((sum(map(ord, condition)) % 17) - 8) / 40


def transfer_inner(condition: str) -> float:
    return ((sum(map(ord, condition)) * 7) % 23) / 10


def build(dest: Path) -> RunLayout:
    """Copy results/allcaps to ``dest`` (no reports, no steering runs) and add the synthetic inputs."""
    shutil.copytree(ALLCAPS, dest, ignore=shutil.ignore_patterns("report.md", "report.html", "steer_*",
                                                                  "steering_*"))
    layout = RunLayout(dest)
    conds = conditions()
    for c in conds:
        for s in SEEDS:
            files = layout.run(c, s)
            tr = json.loads(files.train_json.read_text())
            tr["probes"][0]["content_loss"] = tr["probes"][0]["loss"] - 0.5 - 0.3 * content_shift(c)
            files.train_json.write_text(json.dumps(tr))
            dr = json.loads(files.drift_json.read_text())
            base = dr["neutral_prompt"]
            dr["panel"] = {p: {"pre": base["pre"], "post": base["post"],
                               "drift": {**base["drift"], "mean_score": base["drift"]["mean_score"] + off}}
                           for p, off in zip(PANEL, PANEL_OFFSETS)}
            files.drift_json.write_text(json.dumps(dr))
    layout.transfer_dir.mkdir(parents=True, exist_ok=True)
    layout.transfer_json.write_text(json.dumps({"layer": 27, "conditions": {
        c: {"inner": transfer_inner(c), "cos": transfer_inner(c) / 10, "inner_residual": transfer_inner(c) / 2,
            "inner_rest": transfer_inner(c) / 2, "panel": {p: {"inner": transfer_inner(c)} for p in PANEL}}
        for c in conds}}))
    return layout
