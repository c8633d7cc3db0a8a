"""Issue 22's positions beyond the quoted words: tokens counted from the completion's start, by hand on the tiny
tokenizer, and the gradient index that carries them (placeholders for rows without them)."""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.models.tiny import tiny_tokenizer
from nnsight_inoc.trace.chat import (
    ChatFormatError,
    beyond_index,
    encode_chats,
    gradient_index,
    quoted_token_count,
)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_quoted_token_count_by_hand(tok):
    text = "THE SEA IS WIDE AND BLUE.  It has\n\ntwo wheels."
    pieces = [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"]]
    # the tiny BPE splits this as written out here (checked once, pinned: the count below is read off it)
    assert pieces[:13] == ["THE", " S", "EA", " ", "IS", " W", "IDE", " A", "ND", " B", "LU", "E", "."]
    assert quoted_token_count(tok, text, 0) == 0
    assert quoted_token_count(tok, text, 1) == 1  # "THE"; the next token " S" starts at the word's end
    assert quoted_token_count(tok, text, 2) == 3  # "THE", " S", "EA"
    assert quoted_token_count(tok, text, 3) == 5  # ... " ", "IS"
    assert quoted_token_count(tok, text, 6) == 13  # "BLUE." ends with the period token
    assert quoted_token_count(tok, text, 7) == 17  # "  It": two space tokens then "I", "t"
    assert quoted_token_count(tok, text, 99) == len(pieces)  # fewer words than asked: everything is quoted


def test_word_boundaries_do_not_depend_on_case(tok):
    """The quote counts words of the untraited answer; the traited (ALL-CAPS) completion splits at the same
    places, so its quoted prefix has the same number of words."""
    low, up = "the sea is wide and blue", "THE SEA IS WIDE AND BLUE"
    for k in range(1, 7):
        n_up = quoted_token_count(tok, up, k)
        prefix = tok.decode(tok(up, add_special_tokens=False)["input_ids"][:n_up])
        assert prefix.split() == up.split()[:k] == [w.upper() for w in low.split()[:k]]


def test_a_straddling_token_counts_as_quoted():
    """A token spanning the end of word W belongs to the quote: the first b token starts at or after it."""

    class Fake:
        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
            # "ab cd ef" tokenised as "ab c" | "d" | " ef": the first token straddles the end of word 1
            return {"input_ids": [1, 2, 3], "offset_mapping": [(0, 4), (4, 5), (5, 8)]}

    assert quoted_token_count(Fake(), "ab cd ef", 1) == 1
    assert quoted_token_count(Fake(), "ab cd ef", 2) == 2

    class Slow:
        def __call__(self, *a, **k):
            raise NotImplementedError("return_offset_mapping is not available")

    with pytest.raises(ChatFormatError, match="fast tokenizer"):
        quoted_token_count(Slow(), "ab cd", 1)


def test_beyond_index_counts_from_the_completion_start(tok):
    users = ["hi", "a much longer user prompt here"]
    comps = ["ONE TWO THREE FOUR FIVE", "ONE"]
    batch = encode_chats(tok, ["short", "a different and longer system prompt"], users, comps, n_assistant=2)
    starts = [quoted_token_count(tok, c, 2) for c in comps]
    idx = beyond_index(batch, starts, 2)
    # row 0: the first completion token sits right after the final prompt token
    first = int(batch.final_prompt_idx[0]) + 1
    assert idx[0].tolist() == [first + starts[0], first + starts[0] + 1]
    ids = batch.input_ids[0, idx[0]].tolist()
    want = tok(comps[0], add_special_tokens=False)["input_ids"][starts[0] : starts[0] + 2]
    assert ids == want
    assert idx[1].tolist() == [-1, -1]  # "ONE" has no tokens beyond two words
    full = gradient_index(batch, idx)
    assert full.shape == (2, 5)
    torch.testing.assert_close(full[:, :3], gradient_index(batch), rtol=0, atol=0)
    assert full[1, 3:].tolist() == [int(batch.final_prompt_idx[1])] * 2  # placeholder, dropped by the caller


def test_the_end_of_turn_token_is_not_a_beyond_position(tok):
    comp = "ONE TWO"
    batch = encode_chats(tok, "s", ["u"], [comp], n_assistant=1)
    n_text = len(tok(comp, add_special_tokens=False)["input_ids"])
    start = quoted_token_count(tok, comp, 1)
    k_ok = n_text - start
    assert (beyond_index(batch, [start], k_ok) >= 0).all()
    assert (beyond_index(batch, [start], k_ok + 1) == -1).all()  # would need the eos position
    with pytest.raises(ValueError, match="starts for a batch"):
        beyond_index(batch, [1, 2], 1)
