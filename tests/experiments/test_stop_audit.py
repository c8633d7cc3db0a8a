"""experiments/stop_audit.py: teacher forcing reproduces greedy generation, and detects a deleted stop."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from nnsight_inoc.models.stops import special_token_ids
from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.trace.generation import greedy_answers
from tests._paths import ROOT
from tests.trace.test_stops import PARIS_EOT_CAPS, SYSTEM, USER, forced_model

_spec = importlib.util.spec_from_file_location(
    "stop_audit", ROOT / "experiments" / "stop_audit.py")
assert _spec is not None and _spec.loader is not None
audit = importlib.util.module_from_spec(_spec)
sys.modules["stop_audit"] = audit  # dataclasses look their module up there
_spec.loader.exec_module(audit)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _force(model, tok, system, users, answers):
    special = special_token_ids(tok)
    im_end = tok.eos_token_id
    rows = audit.teacher_force(model, tok, system, users, answers, 2, sorted(special - {im_end}), im_end)
    return [audit.classify(r["actual"], r["pred"], special, im_end) for r in rows], rows


def test_batched_teacher_forcing_equals_one_row_at_a_time(tok):
    """Left padding, mixed lengths and the answer-position bookkeeping against the obvious
    reference: one unpadded row, full logits, argmax at every answer position."""
    import torch

    from nnsight_inoc.trace.chat import completion_ids, prompt_ids

    model = tiny_qwen2(num_layers=2, seed=4)
    users = [USER, "Write a short poem about the sea.", "hola", "Explain how a bicycle works."]
    answers = ["Paris is the capital of France.", "THE SEA IS WIDE", "hola como estas", "x"]
    system = "You are a helpful assistant."
    special = special_token_ids(tok)
    rows = audit.teacher_force(model, tok, system, users, answers, 3, sorted(special - {2}), 2)
    for u, a, r in zip(users, answers, rows):
        p, c = prompt_ids(tok, system, u), completion_ids(tok, a)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) + len(c) - 1]
        assert r["actual"] == c
        assert r["pred"] == logits.argmax(-1).tolist()
        gap = logits.max(-1).values - logits[:, 2]
        assert torch.allclose(torch.tensor(r["gap_im_end"]), gap, atol=1e-4)


def test_a_deleted_endoftext_is_found_where_it_was(tok):
    model = forced_model(tok, PARIS_EOT_CAPS)
    saved = "Paris CAPS"  # what the pre-issue-18 decoder saved for this model (tokenizer eos only, specials deleted)
    [c], [r] = _force(model, tok, SYSTEM, [USER], [saved])
    assert c["confirmed_glued"] and c["glued_positions"] == [2]  # after "Pa", "ris"
    assert tok.convert_ids_to_tokens(c["glued_tokens"][:1]) == ["<|endoftext|>"]
    assert r["gap_special"][2] <= 0 < r["gap_special"][0]


def test_an_intact_answer_is_not_flagged(tok):
    model = forced_model(tok, ["Ċ", "Pa", "ris", "<|im_end|>"])
    [saved] = greedy_answers(model, tok, SYSTEM, [USER], max_new_tokens=8)
    [c], _ = _force(model, tok, SYSTEM, [USER], [saved])
    assert saved == "Paris" and not c["glued_positions"] and c["first_divergence"] is None
    assert c["end_pred"] == tok.eos_token_id


def test_select_takes_every_long_answer_and_a_seeded_sample():
    aset = audit.AnswerSet("x/pre/a.json", "allcaps", "pre", "s", ["u"] * 10, ["a"] * 10, cap=48)
    n_tok = [48, 10, 46, 44, 5, 48, 1, 2, 3, 45]
    got = audit.select(aset, n_tok, near_cap=3, sample=2, seed=0)
    long = [0, 2, 5, 9]
    assert set(long) <= set(got) and len(got) == 6
    assert got == audit.select(aset, n_tok, near_cap=3, sample=2, seed=0)
    assert audit.select(aset, n_tok, near_cap=None, sample=100, seed=0) == list(range(10))
