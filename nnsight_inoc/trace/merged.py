"""Greedy answers of several measurements in as few ``generate`` calls as possible (issue 24, item 4).

A *measurement* is a list of users answered under K system prompts (block k under ``systems[k]``: one prompt for
every user, or one per user) up to its own ``max_new_tokens``. Each (measurement, user) pair is a *slot* of K rows,
one per block. The slots of every measurement are sorted (by answer length, then prompt length) and cut into calls
of at most ``rows_per_call`` rows; every call keeps the layout grouped LoRA adapters expect
(:mod:`nnsight_inoc.train.grouped`: K equal row blocks, block k = run k). A call generates up to the largest
``max_new_tokens`` of its slots, and each row's new ids are then cut to its own measurement's length.

That cut is exact: greedy decoding is prefix-deterministic. Step t's token is the argmax of logits that depend only
on the prompt and tokens 1..t-1, so the first n tokens of a longer greedy decode are the n tokens a decode of length
n makes (the cut is pinned against a shorter decode in tests/trace/test_merged.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nnsight_inoc.models.stops import decode_answer
from nnsight_inoc.trace.chat import Systems, make_batch, per_row, prompt_ids
from nnsight_inoc.trace.generation import generate_new_ids, model_stops
from nnsight_inoc.trace.tracing import TracedLM


@dataclass(frozen=True)
class Measurement:
    """``users`` answered under each of K system prompts, ``max_new_tokens`` greedy tokens at most."""

    systems: Sequence[Systems]  # K: block k's system prompt (one for all users, or one per user)
    users: Sequence[str]
    max_new_tokens: int


@dataclass(frozen=True)
class MergedAnswers:
    """Answers of merged measurements: ``answers[m][k][i]`` (measurement m, block k, user i), and what decoded them."""

    answers: list[list[list[str]]]
    calls: int  # generate calls made
    rows: int  # rows decoded: K x the number of slots
    rows_per_call: int  # the row budget the calls were cut with

    def record(self) -> dict[str, object]:
        """How the answers were decoded, for a result file."""
        return {"mode": "merged", "rows_per_call": self.rows_per_call, "calls": self.calls, "rows": self.rows}


def check_measurements(measurements: Sequence[Measurement]) -> int:
    """K, the number of row blocks every measurement must share. ValueError for no measurements, a measurement without
    users or blocks, a non-positive length, or measurements of different K."""
    if not measurements:
        raise ValueError("no measurements to decode")
    ks = {len(m.systems) for m in measurements}
    if len(ks) != 1:
        raise ValueError(f"measurements have different numbers of row blocks {sorted(ks)}; merged calls need one K")
    (k,) = ks
    for m in measurements:
        if not m.users:
            raise ValueError("a measurement has no users to answer")
        if m.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {m.max_new_tokens}")
    if k < 1:
        raise ValueError("a measurement has no system prompts (K = 0)")
    return k


def plan_calls(tokens: Sequence[int], lengths: Sequence[int], k: int, rows_per_call: int) -> list[list[int]]:
    """Slot indices of each call: slots sorted by (answer length ``tokens[s]``, prompt length ``lengths[s]``), then
    cut into calls of ``rows_per_call // k`` slots (K rows each; at least one slot, so a budget below K still makes
    calls of K rows). Sorting by answer length first keeps short answers out of long decodes (sorting by prompt
    length alone would run most 32-token rows for 48 steps); the number of calls is the fewest the budget allows,
    ceil(slots / slots per call). ValueError for a budget below 1."""
    if rows_per_call < 1:
        raise ValueError(f"rows_per_call must be >= 1, got {rows_per_call}")
    order = sorted(range(len(tokens)), key=lambda s: (tokens[s], lengths[s]))
    per_call = max(1, rows_per_call // k)
    return [order[start : start + per_call] for start in range(0, len(order), per_call)]


def greedy_new_ids_merged(
    model: PreTrainedModel | TracedLM,
    tok: PreTrainedTokenizerBase,
    measurements: Sequence[Measurement],
    rows_per_call: int,
    on_call: Callable[[int], None] | None = None,
) -> tuple[list[list[list[list[int]]]], int]:
    """(ids, calls): ids[m][k][i], the new ids of measurement m's user i under block k, at most that measurement's
    ``max_new_tokens`` long (the stop id and any padding after it included, as ``generate`` returned them), and the
    number of ``generate`` calls. ``on_call`` gets the rows of each call. Errors as :func:`check_measurements`."""
    k = check_measurements(measurements)
    slots = [(m, i) for m, meas in enumerate(measurements) for i in range(len(meas.users))]
    systems = [[per_row(s, len(meas.users)) for s in meas.systems] for meas in measurements]  # [m][k][i]
    prompts = [[prompt_ids(tok, systems[m][b][i], measurements[m].users[i]) for b in range(k)] for m, i in slots]
    calls = plan_calls([measurements[m].max_new_tokens for m, _ in slots], [max(map(len, r)) for r in prompts],
                       k, rows_per_call)
    pad = tok.pad_token_id
    if pad is None:
        raise ValueError("tokenizer has no pad token; set one explicitly when loading")
    stops = model_stops(model, tok)
    out: list[list[list[list[int]]]] = [[[[] for _ in meas.users] for _ in range(k)] for meas in measurements]
    for call in calls:
        batch = make_batch([prompts[s][b] for b in range(k) for s in call], None, int(pad), padding_side="left")
        longest = max(measurements[slots[s][0]].max_new_tokens for s in call)
        new = generate_new_ids(model, tok, batch, longest, stops)
        for b in range(k):
            for row, s in enumerate(call):
                m, i = slots[s]
                # prefix-deterministic greedy decoding: the first n ids are what an n-token decode makes
                out[m][b][i] = new[b * len(call) + row, : measurements[m].max_new_tokens].tolist()
        if on_call is not None:
            on_call(k * len(call))
    return out, len(calls)


def greedy_answers_merged(
    model: PreTrainedModel | TracedLM,
    tok: PreTrainedTokenizerBase,
    measurements: Sequence[Measurement],
    rows_per_call: int,
    on_call: Callable[[int], None] | None = None,
) -> MergedAnswers:
    """Greedy answers of every measurement in the fewest calls of at most ``rows_per_call`` rows (see the module
    docstring), decoded as :func:`~nnsight_inoc.trace.generation.greedy_answers` decodes them (up to the first stop
    id; another special token raises :class:`~nnsight_inoc.models.stops.StopError`)."""
    ids, calls = greedy_new_ids_merged(model, tok, measurements, rows_per_call, on_call)
    stops = model_stops(model, tok)
    answers = [[[decode_answer(tok, row, stops) for row in block] for block in meas] for meas in ids]
    k = len(measurements[0].systems)
    return MergedAnswers(answers, calls, k * sum(len(m.users) for m in measurements), rows_per_call)
