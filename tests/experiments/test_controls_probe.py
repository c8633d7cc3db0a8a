"""experiments/controls_probe.py on a tiny random Qwen2: the leak dial, every condition's loss split and cosines, the
alignment/loss-reduction correlation and transfer, from a run folder whose extract and align are done."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nnsight_inoc.core.config import dump_toml
from tests._paths import ROOT
from tests._study import tiny_study_folder


def test_controls_probe_on_a_prepared_run_folder(tmp_path: Path) -> None:
    from nnsight_inoc.stages.align import run_align
    from nnsight_inoc.stages.extract import run_extract
    from nnsight_inoc.study import open_study

    base, run_dir = tiny_study_folder(tmp_path)  # as published: no issue-16 sections
    study = open_study(base, run_dir, "pytest")
    run_extract(study)
    run_align(study, "all")
    cfg = base.model_copy(update={
        "leak": base.leak.model_copy(update={"targets": ["inoc"], "words": [1, 2]}),
        "transfer": base.transfer.model_copy(update={"n_examples": 2, "n_prompts": 3, "batch_size": 2}),
    })
    cfg_path = tmp_path / "issue16.toml"
    cfg_path.write_text(dump_toml(cfg))
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, "experiments/controls_probe.py", "--config", str(cfg_path), "--run-dir",
                           str(run_dir), "--n", "4", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    leak = res["leak"]
    assert set(res["conditions"]) == {"neutral", "inoc", "explicit", "lossmatch", *leak["conditions"]}
    c = res["conditions"]["inoc"]
    assert len(c["loss"]) == len(c["content_loss"]) == 4 and len(c["cos_at_layer"]) == 4
    assert set(res["relation"]) == set(res["positions"])
    assert -1 <= res["relation"]["a_sum"]["r_alignment_loss_reduction"] <= 1
    assert set(res["transfer"]) == set(res["conditions"])
    # the tables the published README quotes render from the same file
    import importlib.util

    spec = importlib.util.spec_from_file_location("cpt", ROOT / "experiments" / "controls_probe_table.py")
    cpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpt)
    md = cpt.tables(res)
    assert md.count("| leak_inoc |") == 1 and "**Matches**" in md and "| a_sum |" in md
