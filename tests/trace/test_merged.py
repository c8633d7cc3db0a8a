"""trace/merged.py: several measurements of K row blocks decoded in the fewest generate calls of a row budget.

Pinned on a tiny random Qwen2 in fp32 on the CPU, with three different LoRA updates attached as row blocks (block k
= run k, as the drift stage attaches trained runs): the merged ids equal each measurement decoded on its own (the
per-measurement path, ``greedy_new_ids_by_system``) and each run decoded alone (K = 1), including per-row system
prompts (a content leak's) and two answer lengths in one call; cutting a longer greedy decode equals a shorter one.
"""

from __future__ import annotations

import math

import pytest

from nnsight_inoc.models.stops import stop_ids
from nnsight_inoc.models.tiny import tiny_tokenizer
from nnsight_inoc.trace.generation import greedy_new_ids_by_system, model_stops
from nnsight_inoc.trace.merged import (
    Measurement,
    check_measurements,
    greedy_answers_merged,
    greedy_new_ids_merged,
    plan_calls,
)
from tests._merged import USERS, alone, random_lora, tiny_model
from tests._merged import measurements as drift_shaped

K = 3


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def lora(model):
    return random_lora(model, K)


def measurements() -> list[Measurement]:
    return drift_shaped(K)


def through_stop(ids: list[int], stops: tuple[int, ...]) -> list[int]:
    """Ids up to and including the first stop: what the answer is made of (``generate`` pads after a stop, and a
    call whose rows all stop early returns fewer columns)."""
    for pos, t in enumerate(ids):
        if t in stops:
            return ids[: pos + 1]
    return ids


def test_calls_are_cut_from_slots_sorted_by_answer_then_prompt_length():
    tokens, lengths = [6, 3, 6, 3, 6], [10, 50, 5, 7, 30]
    assert plan_calls(tokens, lengths, k=2, rows_per_call=4) == [[3, 1], [2, 0], [4]]  # 2 slots = 4 rows a call
    assert plan_calls(tokens, lengths, k=2, rows_per_call=5) == [[3, 1], [2, 0], [4]]  # rows never exceed the budget
    assert plan_calls(tokens, lengths, k=3, rows_per_call=2) == [[3], [1], [2], [0], [4]]  # below K: one slot a call
    assert len(plan_calls([48] * 200 + [32] * 250, [1] * 450, k=10, rows_per_call=1024)) == math.ceil(450 / 102)
    with pytest.raises(ValueError, match="rows_per_call"):
        plan_calls(tokens, lengths, k=2, rows_per_call=0)


def test_measurements_are_checked():
    with pytest.raises(ValueError, match="different numbers of row blocks"):
        check_measurements([Measurement(["a"], ["u"], 2), Measurement(["a", "b"], ["u"], 2)])
    with pytest.raises(ValueError, match="no users"):
        check_measurements([Measurement(["a"], [], 2)])
    with pytest.raises(ValueError, match="no measurements"):
        check_measurements([])
    assert check_measurements(measurements()) == K


def test_truncating_a_longer_greedy_decode_equals_decoding_fewer_tokens(model, tok, lora):
    stops = model_stops(model, tok)
    with lora.attached(model, None):
        long = greedy_new_ids_by_system(model, tok, measurements()[1].systems, USERS, 9, 8)
        short = greedy_new_ids_by_system(model, tok, measurements()[1].systems, USERS, 3, 8)
    assert any(len(through_stop(r, stops)) > 3 for rows in long for r in rows)  # the long decode goes further
    for k in range(K):
        for i in range(len(USERS)):
            assert through_stop(long[k][i][:3], stops) == through_stop(short[k][i], stops)


@pytest.mark.parametrize("rows_per_call", [K * 2, 1000])  # several calls (one per 2 slots) / everything in one
def test_merged_ids_equal_each_measurement_alone_and_each_run_alone(model, tok, lora, rows_per_call):
    meas = measurements()
    stops = model_stops(model, tok)
    seen: list[int] = []
    with lora.attached(model, None):
        merged, calls = greedy_new_ids_merged(model, tok, meas, rows_per_call, on_call=seen.append)
        separate = [greedy_new_ids_by_system(model, tok, m.systems, m.users, m.max_new_tokens, 2) for m in meas]
    slots = sum(len(m.users) for m in meas)
    assert calls == len(seen) == math.ceil(slots / (rows_per_call // K)) and max(seen) <= rows_per_call
    assert sum(seen) == K * slots
    for m, meas_m in enumerate(meas):
        for k in range(K):
            for i in range(len(meas_m.users)):
                assert len(merged[m][k][i]) <= meas_m.max_new_tokens  # cut to its own measurement's length
                assert through_stop(merged[m][k][i], stops) == through_stop(separate[m][k][i], stops)
    for k in range(K):  # each run alone, one measurement at a time
        with alone(lora, k).attached(model, None):
            for m, meas_m in enumerate(meas):
                own = greedy_new_ids_by_system(model, tok, [meas_m.systems[k]], meas_m.users, meas_m.max_new_tokens)
                assert [through_stop(r, stops) for r in merged[m][k]] == [through_stop(r, stops) for r in own[0]]
    # the runs really differ: a block-order mistake could not pass the comparisons above
    assert merged[0][0] != merged[0][1] or merged[0][1] != merged[0][2]


def test_answers_and_decode_record(model, tok, lora):
    meas = measurements()
    with lora.attached(model, None):
        res = greedy_answers_merged(model, tok, meas, rows_per_call=12)
    slots = sum(len(m.users) for m in meas)
    assert res.record() == {"mode": "merged", "rows_per_call": 12, "calls": math.ceil(slots / 4), "rows": K * slots}
    assert [len(a) for a in res.answers] == [K] * len(meas)
    assert [len(a[0]) for a in res.answers] == [len(m.users) for m in meas]
    assert stop_ids(tok, model.generation_config) == model_stops(model, tok)
