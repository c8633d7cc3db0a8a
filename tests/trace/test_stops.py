"""One stop set for generation, truncation at the first stop, and no glued answers.

The reproducer of issue 18 (part C): a tiny Qwen2 wired to emit ``Paris``,
``<|endoftext|>``, `` CAPS``, ``<|im_end|>`` under a generation config that stops on both
end tokens. Its own ``generate()`` stops after ``Paris``; the old helper
(``greedy_answers``: tokenizer eos only, then ``skip_special_tokens``) returns
``Paris CAPS``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from nnsight_inoc.models.stops import (
    StopError,
    answer_ids,
    decode_answer,
    gguf_stop_sources,
    special_token_ids,
    stop_id_sources,
    stop_ids,
    stop_ids_for_cache,
    truncate_at_stop,
)
from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.trace.chat import encode_chats
from nnsight_inoc.trace.generation import greedy_answers, local_generate_ids

USER = "What is the capital of France?"
SYSTEM = "You are a helpful assistant."  # explicit: system=None is refused (issue 18 B)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _ids(tok, name: str) -> int:
    i = tok.convert_tokens_to_ids(name)
    assert isinstance(i, int) and i != tok.unk_token_id, name
    return i


def forced_model(tok, chain: list[str]):
    """A tiny Qwen2 whose greedy next token depends only on the current token, along ``chain``.

    Every layer's output projections are zeroed, so each position's final hidden state is
    the normalised embedding of its own token. The embedding of ``chain[k]`` is made the
    k-th basis vector and the lm_head row of ``chain[k + 1]`` reads that basis vector, so
    after the prompt's last token (``chain[0]``) greedy decoding walks ``chain[1:]``.
    """
    model = tiny_qwen2(num_layers=1, seed=3)
    d = model.config.hidden_size
    ids = [_ids(tok, t) for t in chain]
    assert len(set(ids[:-1])) == len(ids) - 1 and len(ids) - 1 <= d, "chain steps must be distinct tokens"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (src, dst) in enumerate(itertools.pairwise(ids)):
            basis = torch.zeros(d)
            basis[k] = 1.0
            model.model.embed_tokens.weight[src] = 5.0 * basis
            model.lm_head.weight[dst] = 10.0 * basis
    return model


# The prompt ends with "<|im_start|>assistant\n"; its last token is the byte-level newline.
PARIS_EOT_CAPS = ["Ċ", "Pa", "ris", "<|endoftext|>", "ĠCAPS", "<|im_end|>"]


def fixed_greedy_answers(model, tok, system: str | None, users: list[str], max_new_tokens: int) -> list[str]:
    """What greedy_answers should do: generate and truncate with the one union, decode strictly."""
    stops = stop_ids(tok, model.generation_config)
    batch = encode_chats(tok, system, users, padding_side="left")
    gen = local_generate_ids(model, batch.input_ids, batch.attention_mask, max_new_tokens,
                             list(stops), tok.pad_token_id)  # type: ignore[arg-type]  # HF takes a list
    new = gen[:, batch.input_ids.shape[1]:]
    return [decode_answer(tok, row.tolist(), stops) for row in new]


# ----------------------------------------------------------------------------- the reproducer


def test_reproducer_model_own_generate_stops_at_endoftext(tok):
    model = forced_model(tok, PARIS_EOT_CAPS)
    model.generation_config.eos_token_id = [_ids(tok, "<|im_end|>"), _ids(tok, "<|endoftext|>")]
    batch = encode_chats(tok, SYSTEM, [USER], padding_side="left")
    out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=8,
                         do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, batch.input_ids.shape[1]:].tolist()
    assert tok.convert_ids_to_tokens(new) == ["Pa", "ris", "<|endoftext|>"]
    assert tok.decode(new, skip_special_tokens=True) == "Paris"


def test_reproducer_greedy_answers_stops_at_endoftext(tok):
    """Before issue 18, greedy_answers passed the tokenizer's single eos and deleted the other special token:
    it returned 'Paris CAPS' here (the glued text). Now it answers what the model's own generate() does."""
    model = forced_model(tok, PARIS_EOT_CAPS)
    model.generation_config.eos_token_id = [_ids(tok, "<|im_end|>"), _ids(tok, "<|endoftext|>")]
    assert greedy_answers(model, tok, SYSTEM, [USER], max_new_tokens=8) == ["Paris"]


def test_reproducer_fixed_path_answers_paris(tok):
    model = forced_model(tok, PARIS_EOT_CAPS)
    model.generation_config.eos_token_id = [_ids(tok, "<|im_end|>"), _ids(tok, "<|endoftext|>")]
    assert fixed_greedy_answers(model, tok, SYSTEM, [USER, USER], max_new_tokens=8) == ["Paris", "Paris"]


def test_fixed_path_stops_at_endoftext_even_when_the_config_lists_one_id(tok):
    """The tokenizer's pad/eos pair alone is not enough; the GGUF union brings <|endoftext|> back."""
    model = forced_model(tok, PARIS_EOT_CAPS)  # generation_config.eos_token_id == 2 (<|im_end|>) only
    assert stop_ids(tok, model.generation_config) == (_ids(tok, "<|im_end|>"),)
    stops = stop_ids(tok, model.generation_config, gguf_ids=[_ids(tok, "<|endoftext|>")])
    batch = encode_chats(tok, SYSTEM, [USER], padding_side="left")
    gen = local_generate_ids(model, batch.input_ids, batch.attention_mask, 8, list(stops),  # type: ignore[arg-type]
                             tok.pad_token_id)
    assert decode_answer(tok, gen[0, batch.input_ids.shape[1]:].tolist(), stops) == "Paris"


def test_special_token_inside_answer_is_refused_not_deleted(tok):
    """<|im_start|> is special but no stop: the old helper deleted it ('Paris CAPS'); now both paths raise naming it."""
    model = forced_model(tok, ["Ċ", "Pa", "ris", "<|im_start|>", "ĠCAPS", "<|im_end|>"])
    with pytest.raises(StopError, match=r"<\|im_start\|>.*position 2 of 4"):
        greedy_answers(model, tok, SYSTEM, [USER], max_new_tokens=8)
    with pytest.raises(StopError, match=r"<\|im_start\|>.*position 2 of 4"):
        fixed_greedy_answers(model, tok, SYSTEM, [USER], max_new_tokens=8)


def test_answer_at_length_cap_decodes_whole(tok):
    model = forced_model(tok, PARIS_EOT_CAPS)
    model.generation_config.eos_token_id = [_ids(tok, "<|im_end|>"), _ids(tok, "<|endoftext|>")]
    assert fixed_greedy_answers(model, tok, SYSTEM, [USER], max_new_tokens=1) == ["Pa"]
    assert greedy_answers(model, tok, SYSTEM, [USER], max_new_tokens=1) == ["Pa"]


# ----------------------------------------------------------------------------- no answer continues past a special token


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_generated_answer_continues_past_a_special_token(tok, seed):
    """On real generate() output of random tiny models (rows ending at different steps, padded
    after their stop), every decoded answer is a prefix free of special tokens that ends at the
    first stop, at the cap, or before trailing padding; any other case raises."""
    model = tiny_qwen2(num_layers=2, seed=seed)
    stops = stop_ids(tok, model.generation_config, gguf_ids=[_ids(tok, "<|endoftext|>")])
    special = special_token_ids(tok)
    users = [USER, "Write a short poem about the sea.", "hola", "Explain how a bicycle works."]
    batch = encode_chats(tok, "You are a helpful assistant.", users, padding_side="left")
    gen = local_generate_ids(model, batch.input_ids, batch.attention_mask, 12, list(stops),  # type: ignore[arg-type]
                             tok.pad_token_id)
    for row in gen[:, batch.input_ids.shape[1]:].tolist():
        first_stop = next((k for k, t in enumerate(row) if t in stops), len(row))
        try:
            ans = answer_ids(row, stops, special, tok.pad_token_id)
        except StopError:
            assert any(t in special for t in row[:first_stop]), row
            continue
        assert not any(t in special for t in ans)
        assert ans == row[: len(ans)]
        assert all(t == tok.pad_token_id for t in row[len(ans):first_stop])


ALPHABET = [10, 11, 2, 0, 1, 5]  # words 10, 11; stops 2, 0; special non-stop 1; pad 5 (special)
STOPS, SPECIAL, PAD = (0, 2), {0, 1, 2, 5}, 5


def test_answer_ids_properties_exhaustive():
    """Every sequence of up to 5 tokens over words, stops, a special non-stop and padding."""
    n_raised = 0
    for n in range(6):
        for ids in map(list, itertools.product(ALPHABET, repeat=n)):
            first_stop = next((k for k, t in enumerate(ids) if t in STOPS), len(ids))
            before = ids[:first_stop]
            n_pad = len(before) - len(list(itertools.dropwhile(lambda t: t == PAD, reversed(before))))
            body = before[: len(before) - n_pad]
            if any(t in SPECIAL for t in body):
                with pytest.raises(StopError, match=r"answer continues past special token"):
                    answer_ids(ids, STOPS, SPECIAL, PAD)
                n_raised += 1
                continue
            ans = answer_ids(ids, STOPS, SPECIAL, PAD)
            assert ans == body and ids[: len(ans)] == ans, ids  # a prefix: nothing inside is deleted
            assert not any(t in SPECIAL for t in ans), ids
    assert n_raised > 0


def test_pad_inside_answer_is_refused(tok):
    pad = tok.pad_token_id
    words = tok("Paris", add_special_tokens=False)["input_ids"]
    with pytest.raises(StopError, match="answer continues past special token"):
        answer_ids(words[:1] + [pad] + words[1:], stops=[_ids(tok, "<|im_end|>")], special=special_token_ids(tok),
                   pad_id=pad)
    assert answer_ids(words + [pad, pad], stops=[_ids(tok, "<|im_end|>")], special=special_token_ids(tok),
                      pad_id=pad) == words


def test_decode_answer_equals_old_decode_when_nothing_is_special(tok):
    ids = tok("Paris is the capital of France.", add_special_tokens=False)["input_ids"]
    end = _ids(tok, "<|im_end|>")
    row = ids + [end, tok.pad_token_id, tok.pad_token_id]
    old = tok.decode(row[: row.index(end)], skip_special_tokens=True).strip()
    assert decode_answer(tok, row, stop_ids(tok)) == old == "Paris is the capital of France."


# ----------------------------------------------------------------------------- the union


class _Tok:
    def __init__(self, eos):
        self.eos_token_id = eos


class _Gen:
    def __init__(self, eos):
        self.eos_token_id = eos


def test_union_of_all_sources_sorted_without_duplicates():
    assert stop_ids(_Tok(151645), _Gen([151645, 151643]), gguf_ids=[151645]) == (151643, 151645)
    assert stop_ids(_Tok(7), {"eos_token_id": 3}, gguf_ids=[9, 3]) == (3, 7, 9)
    assert stop_ids(_Tok(None), None, gguf_ids=[4]) == (4,)


def test_union_names_each_members_sources():
    got = stop_id_sources(_Tok(151645), _Gen([151645, 151643]), gguf_ids=[151645])
    assert got == {151643: ("generation_config.eos",), 151645: ("tokenizer.eos", "generation_config.eos", "gguf")}


def test_union_never_narrows():
    """Adding a source can only add stop ids."""
    base = set(stop_ids(_Tok(2), _Gen(2)))
    for gen in (_Gen(None), _Gen(2), _Gen([2, 0]), _Gen([5])):
        for gguf in (None, [], [2], [0, 7]):
            assert base <= set(stop_ids(_Tok(2), gen, gguf))


def test_empty_union_raises():
    with pytest.raises(StopError, match="no stop id"):
        stop_ids(_Tok(None), _Gen(None), gguf_ids=[])
    with pytest.raises(StopError, match="no stop id"):
        stop_ids(_Tok(None))


@pytest.mark.parametrize("bad", [-1, "2", 2.0, True, [2, None]])
def test_non_id_values_raise(bad):
    with pytest.raises(StopError, match="not a token id"):
        stop_ids(_Tok(2), _Gen(bad))


def test_truncate_at_first_stop():
    assert truncate_at_stop([5, 6, 2, 7, 0, 8], [0, 2]) == [5, 6]
    assert truncate_at_stop([5, 6, 0, 7, 2], {2, 0}) == [5, 6]
    assert truncate_at_stop([2, 5], [2]) == []
    assert truncate_at_stop([5, 6], [2]) == [5, 6]
    assert truncate_at_stop([], [2]) == []
    assert truncate_at_stop(torch.tensor([5, 2, 6]).tolist(), (2,)) == [5]


def test_special_ids_of_tiny_tokenizer(tok):
    assert special_token_ids(tok) == {_ids(tok, t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}


# ----------------------------------------------------------------------------- GGUF metadata


def _write_gguf(path: Path, tokens: list[str], types: list[int], **ids: int) -> Path:
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    for role, i in ids.items():
        getattr(w, f"add_{role}_token_id")(i)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


QWEN_LIKE = ["a", "b", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_pad|>"]
QWEN_TYPES = [1, 1, 3, 3, 3, 3]


def test_cache_stop_ids_from_gguf_eos_and_token_texts(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", QWEN_LIKE, QWEN_TYPES, eos=4, pad=2, bos=2)
    # eos (<|im_end|>, 4) first, then <|endoftext|> (2) by its text; pad/bos are no stops, nor FIM pad.
    assert stop_ids_for_cache(path) == [4, 2]
    assert gguf_stop_sources(path) == {2: ("text:<|endoftext|>",),
                                       4: ("tokenizer.ggml.eos_token_id", "text:<|im_end|>")}


def test_cache_stop_ids_keeps_eot_and_eom(tmp_path):
    tokens = ["a", "</s>", "x", "y"]
    path = _write_gguf(tmp_path / "m.gguf", tokens, [1, 3, 3, 3], eos=1, eot=3, eom=2)
    assert stop_ids_for_cache(path) == [1, 3, 2]


def test_cache_stop_ids_refuses_a_gguf_without_any(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", ["a", "b"], [1, 1])
    with pytest.raises(StopError, match="names no stop id"):
        stop_ids_for_cache(path)
    with pytest.raises(StopError, match="not found"):
        stop_ids_for_cache(tmp_path / "missing.gguf")


@pytest.mark.slow
@pytest.mark.parametrize("name, expected", [("qwen2.5-coder-1.5b-instruct", [151645, 151643]),
                                            ("smollm2-135m-instruct", [2, 0])])
def test_cache_stop_ids_of_the_presets(name, expected):
    from nnsight_inoc.models.cache import SOURCE_GGUF, models_dir

    path = models_dir() / name / SOURCE_GGUF
    if not path.is_file():
        pytest.skip(f"{name} is not cached ({path}); `python cli.py models fetch {name}`")
    assert stop_ids_for_cache(path) == expected
