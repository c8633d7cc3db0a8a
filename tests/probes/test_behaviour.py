"""probes/behaviour.py measure_merged and probes/residuals.py final_prompt_projections_merged: measuring several
measurements of K runs together gives what measuring each measurement, and each run, on its own gives.

Tiny random Qwen2, fp32 on the CPU, three different LoRA runs attached as row blocks (block k = run k): answers and
scores are equal, projections equal to round-off (the reads' batches differ, so the sums run in another order).
"""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.data.traits import get_trait, score_texts
from nnsight_inoc.models.tiny import tiny_tokenizer
from nnsight_inoc.probes.behaviour import measure_behaviour, measure_merged
from nnsight_inoc.probes.residuals import final_prompt_projections, final_prompt_projections_merged
from nnsight_inoc.trace.generation import greedy_answers_by_system
from nnsight_inoc.trace.tracing import wrap
from tests._merged import USERS, alone, measurements, random_lora, tiny_model

K = 3
READ_BATCH = 2  # reads straddle measurements: 5 + 5 + 3 + 3 prompts in traces of 2


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    tlm = wrap(model)
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(tlm.n_layers, tlm.d_model, generator=g), dim=-1)
    return model, tlm, tiny_tokenizer(), get_trait("allcaps"), v, random_lora(model, K)


def close(a: list[float], b: list[float]) -> None:
    torch.testing.assert_close(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                               rtol=1e-6, atol=1e-7)


def test_merged_behaviour_equals_each_measurement_and_each_run_alone(setup):
    model, tlm, tok, trait, v, lora = setup
    meas = measurements(K)
    with lora.attached(model, None):
        merged = measure_merged(tlm, tok, trait, meas, v, rows_per_call=2 * K, read_batch_size=READ_BATCH)
        separate = [(greedy_answers_by_system(tlm, tok, m.systems, m.users, m.max_new_tokens, 4),
                     final_prompt_projections(tlm, tok, m.systems, m.users, v, 4)) for m in meas]
    slots = sum(len(m.users) for m in meas)
    assert merged.decode == {"mode": "merged", "rows_per_call": 2 * K, "calls": -(-slots // 2), "rows": K * slots}
    for res, m, (answers, proj) in zip(merged.results, meas, separate):
        assert len(res) == K
        for k in range(K):
            assert res[k]["answers"] == answers[k] and res[k]["prompts"] == list(m.users)
            assert res[k]["system_prompt"] == m.systems[k]
            s = score_texts(trait, answers[k])
            assert res[k]["mean_score"] == pytest.approx(s.mean, nan_ok=True)
            assert res[k]["scores"] == pytest.approx(s.scores.tolist(), nan_ok=True)
            close(res[k]["projection"], proj[k].tolist())
    for k in range(K):  # each run alone (K = 1), one measurement at a time
        with alone(lora, k).attached(model, None):
            for res, m in zip(merged.results, meas):
                own = measure_behaviour(tlm, tok, trait, m.systems[k], m.users, v, max_new_tokens=m.max_new_tokens,
                                        rows_per_call=4, read_batch_size=4)
                assert own["answers"] == res[k]["answers"]
                assert own["n_unscored"] == res[k]["n_unscored"]
                close(own["projection"], res[k]["projection"])
    assert merged.results[0][0]["projection"] != merged.results[0][1]["projection"]  # the runs differ


def test_one_measurement_reads_exactly_as_before(setup):
    """A single measurement's projection sums trace by trace as the per-measurement loop did: bit for bit."""
    model, tlm, tok, _, v, lora = setup
    m = measurements(K)[1]
    with lora.attached(model, None):
        (merged,) = final_prompt_projections_merged(tlm, tok, [(m.systems, m.users)], v, READ_BATCH)
        ref = final_prompt_projections(tlm, tok, m.systems, m.users, v, READ_BATCH)
    assert torch.equal(merged, ref) and merged.shape == (K, tlm.n_layers) and merged.dtype == torch.float64


def test_bad_inputs_are_refused(setup):
    model, tlm, tok, trait, v, _ = setup
    with pytest.raises(ValueError, match="v must be"):
        final_prompt_projections_merged(tlm, tok, [(["a"], USERS)], v[:1], 2)
    with pytest.raises(ValueError, match="different numbers of row blocks"):
        final_prompt_projections_merged(tlm, tok, [(["a"], USERS), (["a", "b"], USERS)], v, 2)
    with pytest.raises(ValueError, match="no prompts"):
        measure_merged(tlm, tok, trait, [], v, rows_per_call=4, read_batch_size=2)
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            measure_behaviour(tlm, tok, trait, "a", USERS, v, max_new_tokens=2, rows_per_call=4, read_batch_size=2)
    finally:
        model.eval()
