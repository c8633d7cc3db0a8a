"""Chat templates without a system role are caught when the model loads; folding is explicit; a template's hidden
default system prompt is found and shown."""

from __future__ import annotations

import pytest

from nnsight_inoc.models.errors import ModelInputError
from nnsight_inoc.models.load import load_model
from nnsight_inoc.models.template import apply_system_role, default_system, system_role_problem
from nnsight_inoc.models.tiny import tiny_tokenizer
from nnsight_inoc.trace.chat import ChatFormatError, encode_chats, prompt_ids
from tests._tiny import save_tiny_checkpoint

# Gemma 2's chat template (google/gemma-2-2b-it tokenizer_config.json), verbatim.
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
QWEN_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def gemma_tokenizer():
    tok = tiny_tokenizer()
    tok.chat_template = GEMMA2_TEMPLATE
    return tok


def test_template_without_system_role_is_refused_naming_the_option():
    tok = gemma_tokenizer()
    assert "System role not supported" in system_role_problem(tok)
    with pytest.raises(ModelInputError, match=r"without a system role .*System role not supported.*"
                                              r"model.system_role = \"fold\""):
        apply_system_role(tok, "native", "tiny-gemma")
    assert system_role_problem(tiny_tokenizer()) is None
    assert apply_system_role(tiny_tokenizer(), "native", "tiny-qwen") == []


def test_fold_puts_the_system_prompt_at_the_start_of_the_first_user_turn():
    tok = gemma_tokenizer()
    notes = apply_system_role(tok, "fold", "tiny-gemma")
    assert "folded" in notes[0] and "had none" in notes[0]
    text = tok.apply_chat_template([{"role": "system", "content": "Respond in ALL CAPS."},
                                    {"role": "user", "content": "Hi there"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.endswith("<start_of_turn>user\nRespond in ALL CAPS.\n\nHi there<end_of_turn>\n<start_of_turn>model\n")
    empty = tok.apply_chat_template([{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}],
                                    tokenize=False, add_generation_prompt=True)
    assert "<start_of_turn>user\nHi<end_of_turn>" in empty  # an empty system prompt adds nothing
    batch = encode_chats(tok, "Respond in ALL CAPS.", ["Hi there"], ["OK"])  # the study's own formatting path
    assert "Respond in ALL CAPS.\n\nHi there" in tok.decode(batch.input_ids[0])


def test_loading_a_gemma_style_model(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "gemma")
    tok = gemma_tokenizer()
    tok.save_pretrained(folder)
    with pytest.raises(ModelInputError, match="model.system_role"):
        load_model(folder)
    loaded = load_model(folder, system_role="fold")
    assert loaded.system_role == "fold" and any("folded" in n for n in loaded.notes)


def test_the_templates_hidden_default_is_found_and_none_is_refused():
    tok = tiny_tokenizer()  # Qwen2.5's template: no system message -> its own default
    assert default_system(tok) == QWEN_DEFAULT
    assert default_system(gemma_tokenizer()) is None
    with pytest.raises(ChatFormatError, match=r"system=None.*You are Qwen, created by Alibaba Cloud"):
        prompt_ids(tok, None, "Hi")  # type: ignore[arg-type]
    with pytest.raises(ChatFormatError, match="system=None"):
        encode_chats(tok, None, ["Hi"])  # type: ignore[arg-type]
    with_default = tok.decode(prompt_ids(tok, QWEN_DEFAULT, "Hi"))
    assert with_default == tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                                   add_generation_prompt=True)  # keeping it is explicit now
    assert "<|im_start|>system\n<|im_end|>" in tok.decode(prompt_ids(tok, "", "Hi"))
