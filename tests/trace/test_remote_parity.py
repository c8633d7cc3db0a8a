"""Local vs a real NDIF server on loopback: the same CLI commands, only ``--backend`` differs.

Starts the loopback stack (``tools/ndif_local/start.sh``: Redis, moto S3, Ray head,
ndif 0.1.2 API, in a private network namespace), runs ``cli.py run`` (splits, extract with
its greedy answers, align for every condition with the loss-matched control) on a tiny
random Qwen2 twice, once per backend, and compares every saved number (|diff| <= 1e-5).
Needs root, ``redis-server`` and ``tools/ndif_local/install.sh``; run with
``pytest -m ndif`` (see README "Remote backend"). Logs stay in ``.ndif_run/pytest-*``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nnsight_inoc.core import layout as A
from nnsight_inoc.core.artifacts import load_torch, read_json
from nnsight_inoc.core.config import dump_toml, from_dict
from nnsight_inoc.data.splits import Prompt, Splits, save_splits
from tests._paths import ROOT
from tests._tiny import save_tiny_checkpoint

pytestmark = pytest.mark.ndif

STACK = ROOT / "tools" / "ndif_local"
TOL = 1e-5
WALL_CLOCK = {"seconds"}  # timings, not results
WORDS = ["sea", "fox", "test", "poem", "bicycle", "France", "cook", "world", "dog", "blue", "wide", "tips"]


def _prompts(tag: str, n: int) -> list[Prompt]:
    return [Prompt(f"{tag}:{i}", f"Write about the {WORDS[i % len(WORDS)]} number {i} {tag}", tag) for i in range(n)]


@pytest.fixture(scope="module")
def ndif_stack():
    """The loopback NDIF server for this module's tests; every process stopped by PID right after
    (module scope, so Ray's processes do not share the CPU with the rest of the suite)."""
    # CI sets NNSIGHT_INOC_REQUIRE_NDIF=1 so a missing prerequisite fails instead of skipping.
    missing = pytest.fail if os.environ.get("NNSIGHT_INOC_REQUIRE_NDIF") == "1" else pytest.skip
    if os.geteuid() != 0 or shutil.which("redis-server") is None or shutil.which("ip") is None:
        missing("loopback NDIF needs root, redis-server and iproute2 (README 'Remote backend')")
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        missing("ndif server packages missing: run tools/ndif_local/install.sh")
    run = ROOT / ".ndif_run" / f"pytest-{time.strftime('%Y%m%d-%H%M%S')}"
    env = {**os.environ, "PYTHON": sys.executable}
    start = subprocess.run([str(STACK / "start.sh"), str(run)], env=env, capture_output=True, text=True, timeout=300)
    if start.returncode != 0:
        pytest.fail(f"NDIF stack did not start:\n{start.stdout}\n{start.stderr}")
    try:
        yield {"run": run, "netns": (run / "netns").read_text().strip()}
    finally:
        subprocess.run([str(STACK / "stop.sh"), str(run)], timeout=120, check=False)


def _cli(args: list[str], home: Path, netns: str | None, log: Path) -> float:
    env = {**os.environ, "NNSIGHT_INOC_QUIET": "1", "NNSIGHT_INOC_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "cli.py"), *args]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    t0 = time.time()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)  # no time limit: slow is not wrong
    log.write_text(" ".join(cmd) + "\n\n" + res.stdout + "\n" + res.stderr)
    assert res.returncode == 0, f"{' '.join(args)} failed (log {log}):\n{res.stderr[-3000:]}"
    return time.time() - t0


def _max_diff(a: object, b: object, where: str, diffs: dict[str, float]) -> None:
    """Walk two saved artifacts: tensors within TOL, everything else equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        diffs[where] = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            if k not in WALL_CLOCK:
                _max_diff(a[k], b[k], f"{where}.{k}", diffs)
    elif isinstance(a, (list, tuple)) and a and isinstance(a[0], (float, int, list, dict, torch.Tensor)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _max_diff(x, y, f"{where}[{i}]", diffs)
    elif isinstance(a, float):
        diffs[where] = abs(a - b) if a == a or b == b else 0.0  # NaN == NaN here
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_extract_and_align_equal_local_and_remote(ndif_stack, tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "tiny")
    splits = Splits(_prompts("dir", 8), _prompts("held", 8), _prompts("sft", 10), _prompts("eval", 6), card={})
    splits.card = {"sha256": splits.sha256()}
    cfg = from_dict(
        {
            "model": {"name": str(folder), "device": "cpu"},
            "data": {"n_direction": 16, "n_sft": 10, "n_eval": 6, "sft_max_new_tokens": 8},
            "extract": {"batch_size": 5, "max_new_tokens": 6, "n_monitor_prompts": 6,
                        "monitor_prompts": ["Respond in ALL CAPS.", "You are a helpful assistant."]},
            "align": {"batch_size": 4, "n_random": 300, "n_bootstrap": 100, "lossmatch_examples": 10,
                      "lossmatch_check_prompts": 2, "lossmatch_max_trait_score": 1.0},
            # `run` trains LoRA locally (skipped, with a message, on the remote backend): keep it tiny.
            "finetune": {"steps": 1, "batch_size": 2, "seeds": [0], "probe_every": 1, "n_probe": 2,
                         "n_drift_prompts": 2, "target_modules": ["q_proj", "v_proj"], "which": "main"},
        },
        source="test",
    )
    cfg_path = tmp_path / "study.toml"
    cfg_path.write_text(dump_toml(cfg))
    runs = {}
    seconds = {}
    for backend in ("local", "remote"):
        run_dir = tmp_path / f"run_{backend}"
        save_splits(splits, run_dir / A.DATA_DIR)
        args = ["run", "--config", str(cfg_path), "--run-dir", str(run_dir), "--backend", backend]
        if backend == "remote":
            args += ["--ndif-host", "127.0.0.1", "--ndif-port", "8001", "--ndif-no-tls"]
        # separate cache homes: the remote run must generate its own SFT completions
        seconds[backend] = _cli(args, tmp_path / f"home_{backend}", ndif_stack["netns"] if backend == "remote" else None,
                                ndif_stack["run"] / "logs" / f"cli_{backend}.log")
        runs[backend] = run_dir

    prov = json.loads((runs["remote"] / A.PROVENANCE).read_text())
    assert prov["facts"]["backend"]["kind"] == "remote" and prov["facts"]["backend"]["host"] == "http://127.0.0.1:8001"

    diffs: dict[str, float] = {}
    rel = [A.EXTRACT_DIR + "/" + A.DIRECTIONS] + sorted(
        str(p.relative_to(runs["local"])) for p in (runs["local"] / A.ALIGN_DIR).glob("cond_*.pt")
    )
    assert len(rel) == 5  # directions + neutral, inoc, explicit, lossmatch
    for r in rel:
        _max_diff(load_torch(runs["local"] / r), load_torch(runs["remote"] / r), r, diffs)
    for r in (A.EXTRACT_DIR + "/" + A.EXTRACT_SUMMARY, A.ALIGN_DIR + "/" + A.LOSSMATCH,
              A.ALIGN_DIR + "/" + A.ALIGN_SUMMARY):
        _max_diff(read_json(runs["local"] / r), read_json(runs["remote"] / r), r, diffs)
    # the model's own greedy answers (remote: nnsight generate on the server) are the same text
    assert read_json(runs["local"] / A.SFT_COMPLETIONS)["source_answers"] == \
        read_json(runs["remote"] / A.SFT_COMPLETIONS)["source_answers"]
    tables = []
    for b in ("local", "remote"):
        with open(runs[b] / A.EXTRACT_DIR / A.MONITOR_TABLE, newline="") as fh:
            tables.append(list(csv.reader(fh)))
    assert len(tables[0]) == len(tables[1]) > 1 and tables[0][0] == tables[1][0]
    for i, (ra, rb) in enumerate(zip(tables[0][1:], tables[1][1:])):
        assert ra[:3] == rb[:3], f"monitoring row {i}"  # system index, prompt, id
        _max_diff([float(x) for x in ra[3:]], [float(x) for x in rb[3:]], f"monitoring[{i}]", diffs)
    worst = max(diffs, key=diffs.get)
    report = {"max_abs_diff": diffs[worst], "worst": worst, "n_compared": len(diffs), "seconds": seconds,
              "n_nonzero": sum(d > 0 for d in diffs.values())}
    (ndif_stack["run"] / "parity.json").write_text(json.dumps(report, indent=2))
    print(f"\nremote parity: {report}")
    assert diffs[worst] <= TOL, report
