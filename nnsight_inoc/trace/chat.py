"""Chat formatting and padded batches with exact position bookkeeping.

Every measurement in the study is taken at a named token position (the final
prompt token, the first assistant tokens). Those indices are computed once here,
from token ids, for either padding side, so no caller ever re-derives them.
The prompt and the completion are tokenised separately and concatenated, which
keeps the prompt's tokens identical whatever completion follows (no BPE merge
across the boundary) and makes the completion-only loss mask exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from nnsight_inoc.models.template import default_system


class ChatFormatError(ValueError):
    """The tokenizer cannot format a chat the way the study needs."""


def prompt_ids(tok: PreTrainedTokenizerBase, system: str, user: str) -> list[int]:
    """Token ids of the chat prompt up to and including the assistant header.

    ``system`` must be given: with no system message, many templates silently insert their own
    default (Qwen2.5: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    which would then be measured without anyone having chosen it. Pass that text to keep it, or
    "" for an empty system turn. ChatFormatError for None names the template's default.
    """
    if not getattr(tok, "chat_template", None):
        raise ChatFormatError("tokenizer has no chat template; the study needs a chat model")
    if system is None:
        default = default_system(tok)
        hidden = f"inserts its own default system prompt {default!r}" if default else "inserts no system prompt"
        raise ChatFormatError(f"system=None: give the system prompt explicitly (this chat template {hidden} when "
                              "there is none; pass that text to keep it, or '' for an empty one)")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ChatFormatError("chat template produced an empty prompt")
    return list(ids)


def completion_ids(tok: PreTrainedTokenizerBase, completion: str) -> list[int]:
    """Completion tokens followed by the end-of-turn token the model must learn to emit."""
    if tok.eos_token_id is None:
        raise ChatFormatError("tokenizer has no eos token; cannot end an assistant turn")
    ids = tok(completion, add_special_tokens=False)["input_ids"]
    return list(ids) + [int(tok.eos_token_id)]


@dataclass
class Batch:
    """A padded batch. Index tensors are absolute positions in the padded rows."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    position_ids: torch.Tensor  # (B, T) long
    final_prompt_idx: torch.Tensor  # (B,) the token just before the first assistant token
    assistant_idx: torch.Tensor  # (B, k) first k assistant (completion) tokens; -1 where missing
    target_mask: torch.Tensor  # (B, T) bool: logits at t predict a completion token at t+1
    completion_mask: torch.Tensor  # (B, T) bool: positions holding completion tokens (incl. eos)
    prompt_len: torch.Tensor  # (B,) unpadded prompt lengths
    completion_len: torch.Tensor  # (B,) completion lengths incl. eos (0 if no completion)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


def make_batch(
    prompts: Sequence[list[int]],
    completions: Sequence[list[int]] | None,
    pad_id: int,
    padding_side: Literal["left", "right"] = "left",
    n_assistant: int = 3,
) -> Batch:
    """Concatenate prompt (+ completion) ids per row, pad, and record the study positions."""
    if not prompts:
        raise ValueError("empty batch")
    comps = list(completions) if completions is not None else [[] for _ in prompts]
    if len(comps) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(comps)} completions")
    rows = [list(p) + list(c) for p, c in zip(prompts, comps)]
    T = max(len(r) for r in rows)
    B = len(rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    final_idx = torch.empty(B, dtype=torch.long)
    asst = torch.full((B, n_assistant), -1, dtype=torch.long)
    tmask = torch.zeros((B, T), dtype=torch.bool)
    cmask = torch.zeros((B, T), dtype=torch.bool)
    for i, (p, c, r) in enumerate(zip(prompts, comps, rows)):
        off = T - len(r) if padding_side == "left" else 0
        input_ids[i, off : off + len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, off : off + len(r)] = 1
        final_idx[i] = off + len(p) - 1
        k = min(n_assistant, len(c))
        if k:
            asst[i, :k] = torch.arange(off + len(p), off + len(p) + k)
            # logits at positions final..final+len(c)-1 predict the completion tokens
            tmask[i, off + len(p) - 1 : off + len(p) - 1 + len(c)] = True
            cmask[i, off + len(p) : off + len(p) + len(c)] = True
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    return Batch(
        input_ids=input_ids,
        attention_mask=attn,
        position_ids=position_ids,
        final_prompt_idx=final_idx,
        assistant_idx=asst,
        target_mask=tmask,
        completion_mask=cmask,
        prompt_len=torch.tensor([len(p) for p in prompts], dtype=torch.long),
        completion_len=torch.tensor([len(c) for c in comps], dtype=torch.long),
    )


Systems = str | None | Sequence[str | None]


def per_row(system: Systems, n: int) -> list[str | None]:
    """One system prompt per row: a shared prompt repeated, or a per-row list checked for length."""
    if system is None or isinstance(system, str):
        return [system] * n
    rows = list(system)
    if len(rows) != n:
        raise ValueError(f"{len(rows)} system prompts for {n} rows; give one per row or one for all")
    return rows


def encode_chats(
    tok: PreTrainedTokenizerBase,
    system: Systems,
    users: Sequence[str],
    completions: Sequence[str] | None = None,
    padding_side: Literal["left", "right"] = "left",
    n_assistant: int = 3,
) -> Batch:
    """Tokenise and batch chats under one shared system prompt, or one per row (a sequence as long as ``users``:
    row-grouped training puts several runs' prompts in one batch; per-example prompts give each chat its own)."""
    pad = tok.pad_token_id
    if pad is None:
        raise ChatFormatError("tokenizer has no pad token; set one explicitly when loading")
    p_ids = [prompt_ids(tok, sys_, u) for sys_, u in zip(per_row(system, len(users)), users)]
    c_ids = [completion_ids(tok, c) for c in completions] if completions is not None else None
    return make_batch(p_ids, c_ids, int(pad), padding_side=padding_side, n_assistant=n_assistant)


def gradient_index(batch: Batch, beyond: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1 + k) absolute positions: the final prompt token then the first k assistant tokens.

    ``beyond`` (B, m) from :func:`beyond_index` appends m more columns (issue 22: tokens beyond a quoted
    prefix); a row without them (-1) gets its final prompt token there as a placeholder, which the caller
    must drop (``(beyond >= 0).all(1)`` says which rows are real). Without ``beyond``, exactly as before.
    """
    if (batch.assistant_idx < 0).any():
        short = int((batch.assistant_idx < 0).any(1).sum())
        raise ValueError(
            f"{short} example(s) have fewer completion tokens than the {batch.assistant_idx.shape[1]} "
            "assistant positions measured; filter them out explicitly (and report the count)"
        )
    index = torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], dim=1)
    if beyond is None:
        return index
    if beyond.shape[0] != batch.size:
        raise ValueError(f"beyond has {beyond.shape[0]} rows for a batch of {batch.size}")
    filler = batch.final_prompt_idx[:, None].expand_as(beyond)
    return torch.cat([index, torch.where(beyond >= 0, beyond, filler)], dim=1)


def quoted_token_count(tok: PreTrainedTokenizerBase, completion: str, words: int) -> int:
    """How many of the completion's tokens lie wholly or partly within its first ``words`` words (issue 22).

    Words are whitespace-separated (``str.split``, as the content leak counts the words it quotes), so
    word boundaries do not depend on case (an ALL-CAPS answer splits where its untraited answer does).
    Method: the tokenizer's character offsets of the completion (the same ids :func:`completion_ids`
    makes); the first token beyond the words is the first whose span starts at or after the end of word
    ``words``, so a token straddling that end counts as quoted. ``words`` >= the completion's word count
    returns every token. ChatFormatError for a tokenizer without offsets (a slow tokenizer).
    """
    if words <= 0:
        return 0
    try:
        enc = tok(completion, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as err:
        raise ChatFormatError("counting tokens beyond the quoted words needs a fast tokenizer (offsets)") from err
    offsets = enc["offset_mapping"]
    spans = list(re.finditer(r"\S+", completion))
    if len(spans) <= words:
        return len(offsets)
    end = spans[words - 1].end()
    return next((i for i, (start, _) in enumerate(offsets) if start >= end), len(offsets))


def beyond_index(batch: Batch, starts: Sequence[int], k: int) -> torch.Tensor:
    """(B, k) absolute positions of the k completion tokens after the first ``starts[i]`` of row i
    (:func:`quoted_token_count`); a row whose completion has fewer than ``starts[i] + k`` text tokens (the
    end-of-turn token excluded: nothing after it is in the loss) is all -1. Counted from the completion's
    start, so the positions are the same tokens whatever system prompt precedes them."""
    if len(starts) != batch.size:
        raise ValueError(f"{len(starts)} starts for a batch of {batch.size}")
    out = torch.full((batch.size, k), -1, dtype=torch.long)
    for i, s in enumerate(starts):
        if s < 0:
            raise ValueError(f"start must be >= 0, got {s}")
        if s + k <= int(batch.completion_len[i]) - 1:
            first = int(batch.final_prompt_idx[i]) + 1 + s
            out[i] = torch.arange(first, first + k)
    return out
