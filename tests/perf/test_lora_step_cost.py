"""perf/lora_step_cost.py runs on CPU (tiny shape), and its 'before' check still behaves like the current one."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from click.testing import CliRunner

from nnsight_inoc.trace.loss import NonFiniteError
from tests._paths import ROOT

_spec = importlib.util.spec_from_file_location(
    "lora_step_cost", ROOT / "perf" / "lora_step_cost.py")
lsc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lsc)


def test_runs_every_variant_on_cpu(tmp_path):
    out = tmp_path / "cost.json"
    res = CliRunner().invoke(lsc.main, ["--shape", "tiny", "--device", "cpu", "--precision", "highest",
                                        "--warmup", "1", "--steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    d = json.loads(out.read_text())
    assert [r["check"] for r in d["runs"]] == ["per_weight", "total_norm"] * 2
    assert d["lora_weights"] == 2 * 2 * 7  # A and B, 2 layers, 7 modules
    assert d["tokens_real"] < d["tokens_padded"]
    assert all(len(r["step_times_s"]) == 2 and r["step_median_s"] > 0 for r in d["runs"])


@pytest.mark.parametrize("check", sorted(lsc.CHECKS))
def test_both_checks_refuse_a_nan_gradient(check):
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([0.0, float("nan")])
    with pytest.raises(NonFiniteError, match="first w"):
        lsc.CHECKS[check]({"w": p}, 0)
