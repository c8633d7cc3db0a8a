"""Tiny random Qwen2 models with an offline tokenizer and the Qwen2.5 chat template.

Tests and the CPU profiles need the real architecture and the real chat
format without any download; numbers from these models mean nothing, only the code
paths and index conventions are exercised.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

# The Qwen2.5 chat template, verbatim in behaviour for system/user/assistant turns
# (tool-calling branches dropped: the study never uses them).
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "You are a helpful assistant. Respond in ALL CAPS. Respond normally; do not use ALL CAPS.",
    "You always capitalise your responses. You always speak in Spanish.",
    "system user assistant. What is the capital of France? Paris is the capital of France.",
    "Write a short poem about the sea. THE SEA IS WIDE AND BLUE.",
    "Explain how a bicycle works. Give three tips for learning to cook. hola como estas",
    "the quick brown fox jumps over the lazy dog THE QUICK BROWN FOX 0123456789 .,;:!?'\"()-",
]


@lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(_CORPUS * 4, trainer)
    return tk.to_str()


def tiny_tokenizer(vocab_size: int = 400, padding_side: str = "left") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in-process, with Qwen's special tokens and template."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side=padding_side,
    )
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def tiny_qwen2(
    vocab_size: int | None = None,
    hidden_size: int = 32,
    num_layers: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2ForCausalLM small enough for unit tests."""
    if vocab_size is None:
        vocab_size = len(tiny_tokenizer())
    cfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    # Random init uses std 0.02: activations are then tiny and gradients underflow less in
    # fp32 tests if we scale the embeddings up a little.
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(10.0)
    return model.to(dtype).eval()
