"""restore_v's calibration on a tiny random Qwen2: top-down factors reach neutral's alignment at every reachable layer;
a layer no scale reaches is recorded with its gap, and the arm is refused when it is the reporting layer."""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.measures import intervention as MI
from nnsight_inoc.measures.alignment import position_names
from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.probes import restore as R
from nnsight_inoc.probes.gradients import gradient_metrics
from nnsight_inoc.trace.tracing import wrap

PROMPTS = ["What is the capital of France?", "Write a short poem about the sea.", "hola", "Explain a bicycle."]
COMPS = ["PARIS IS THE CAPITAL OF FRANCE.", "THE SEA IS WIDE AND BLUE.", "COMO ESTAS", "IT HAS TWO WHEELS."]
NEUTRAL, INOC = "You are a helpful assistant.", "You always capitalise your responses."


@pytest.fixture(scope="module")
def setup():
    tlm = wrap(tiny_qwen2(num_layers=4, seed=2))
    v = MI.unit(torch.randn(4, tlm.d_model, generator=torch.Generator().manual_seed(5)))
    return tlm, tiny_tokenizer(), v


def _factors(setup, required: int = 3):
    tlm, tok, v = setup
    return R.restore_factors(tlm, tok, INOC, NEUTRAL, PROMPTS, COMPS, v, [0, 1, 2, 3], n_assistant=3, batch_size=2,
                             required_layer=required)


def test_every_reached_layer_gets_neutrals_alignment(setup):
    tlm, tok, v = setup
    rec = _factors(setup)
    pos = position_names(3).index("a_sum")
    neutral = gradient_metrics(tlm, tok, NEUTRAL, PROMPTS, COMPS, v, n_assistant=3, batch_size=2).cos[:, :, pos]
    edited = gradient_metrics(tlm, tok, INOC, PROMPTS, COMPS, v, n_assistant=3, batch_size=2,
                              edit=R.restore_edit(v, {int(k): s for k, s in rec["factors"].items()})).cos[:, :, pos]
    for l in range(4):
        if str(l) not in rec["unreached"]:
            assert abs(float(edited[:, l].double().mean() - neutral[:, l].double().mean())) < R.MAX_ACHIEVED_GAP
    assert rec["max_abs_gap"] < R.MAX_ACHIEVED_GAP and rec["required_layer"] == 3


def test_an_unreachable_layer_is_recorded_and_the_reporting_layer_is_required(setup, monkeypatch):
    real = MI.restore_factor
    calls: list[float] = []

    def layer1_unreachable(proj, norm, target):
        calls.append(target)
        s, _ = real(proj, norm, target)
        return (s, len(calls) != 3)  # the third layer from the top (layer 1) "cannot be reached"

    monkeypatch.setattr(R, "restore_factor", layer1_unreachable)
    rec = _factors(setup, required=3)
    assert list(rec["unreached"]) == ["1"] and rec["unreached"]["1"] >= 0
    calls.clear()
    with pytest.raises(ValueError, match="reporting layer 1"):
        _factors(setup, required=1)
