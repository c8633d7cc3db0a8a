"""Residual-stream reads over many prompts: the positions v is built from, and the residual scale.

All reads go through :func:`~nnsight_inoc.trace.tracing.read_residuals` (one nnsight trace per
batch, no autograd graph), so every stage reads the residual stream the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from nnsight_inoc.trace.chat import Systems, encode_chats, per_row
from nnsight_inoc.trace.tracing import TracedLM, read_residuals


def read_positions(
    tlm: TracedLM, tok: PreTrainedTokenizerBase, system: str | None, prompts: Sequence[str],
    answers: Sequence[str], batch_size: int,
) -> torch.Tensor:
    """(n, L, 3, d) float32: final prompt token, first assistant token, mean over response tokens.

    The response is the model's own answer, re-tokenised after its end-of-turn token
    (which is included in the mean: it is part of what the model produced).
    """
    out = []
    for s in range(0, len(prompts), batch_size):
        batch = encode_chats(tok, system, prompts[s : s + batch_size], answers[s : s + batch_size], n_assistant=1)
        index = torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], 1)
        out.append(read_residuals(tlm, batch, index, mean_masks=batch.completion_mask[:, None, :]))
    return torch.cat(out)


def read_final(
    tlm: TracedLM, tok: PreTrainedTokenizerBase, system: str | None, prompts: Sequence[str], batch_size: int,
) -> torch.Tensor:
    """(n, L, d) float32 at the final prompt token only (prompt without an answer)."""
    out = []
    for s in range(0, len(prompts), batch_size):
        batch = encode_chats(tok, system, prompts[s : s + batch_size])
        out.append(read_residuals(tlm, batch, batch.final_prompt_idx[:, None])[:, :, 0])
    return torch.cat(out)


def final_prompt_projection(
    tlm: TracedLM, tok: PreTrainedTokenizerBase, system: Systems, prompts: Sequence[str], v: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """Mean over prompts of <h_l(final prompt token), v_l>, per layer: (L,) float64.

    ValueError when ``v`` is not (n_layers, d_model).
    """
    return final_prompt_projections(tlm, tok, [system], prompts, v, batch_size)[0]


def final_prompt_projections(
    tlm: TracedLM, tok: PreTrainedTokenizerBase, systems: Sequence[Systems], prompts: Sequence[str],
    v: torch.Tensor, batch_size: int,
) -> torch.Tensor:
    """:func:`final_prompt_projection` under each of K system prompts (each one for all prompts, or one per
    prompt), (K, L) float64: :func:`final_prompt_projections_merged` of one measurement."""
    return final_prompt_projections_merged(tlm, tok, [(systems, prompts)], v, batch_size)[0]


def final_prompt_projections_merged(
    tlm: TracedLM, tok: PreTrainedTokenizerBase, reads: Sequence[tuple[Sequence[Systems], Sequence[str]]],
    v: torch.Tensor, batch_size: int,
) -> list[torch.Tensor]:
    """:func:`final_prompt_projections` of several measurements (``(systems, prompts)``, the same K for all) read
    together: one (K, L) float64 tensor per measurement.

    Every trace holds K row blocks (block k: up to ``batch_size`` prompts, under block k's system prompts), the
    layout grouped LoRA adapters expect, so K runs are read in one pass; the prompts of all measurements follow one
    another in order, so a trace may hold the end of one measurement and the start of the next. Each measurement's
    rows of a trace are summed as one block, so a single measurement sums exactly as it always has. ValueError when
    ``v`` is not (n_layers, d_model), a measurement has no prompts, or the measurements differ in K.
    """
    if tuple(v.shape) != (tlm.n_layers, tlm.d_model):
        raise ValueError(f"v must be (n_layers, d_model) = {(tlm.n_layers, tlm.d_model)}, got {tuple(v.shape)}")
    if not reads or any(not prompts for _, prompts in reads):
        raise ValueError("no prompts to read")
    ks = {len(systems) for systems, _ in reads}
    if len(ks) != 1:
        raise ValueError(f"measurements have different numbers of row blocks {sorted(ks)}; one read needs one K")
    (K,) = ks
    vv = v.detach().double().cpu()
    per_prompt = [[per_row(sys_, len(prompts)) for sys_ in systems] for systems, prompts in reads]  # [m][k][i]
    slots = [(m, i) for m, (_, prompts) in enumerate(reads) for i in range(len(prompts))]
    totals = [torch.zeros(K, tlm.n_layers, dtype=torch.float64) for _ in reads]
    for s in range(0, len(slots), batch_size):
        chunk = slots[s : s + batch_size]
        batch = encode_chats(tok, [per_prompt[m][k][i] for k in range(K) for m, i in chunk],
                             [reads[m][1][i] for _ in range(K) for m, i in chunk])
        h = read_residuals(tlm, batch, batch.final_prompt_idx[:, None])[:, :, 0].double()  # (K * b, L, d)
        b = len(chunk)
        for m, lo, hi in _spans([m for m, _ in chunk]):
            for k in range(K):  # block by block: K = 1 sums exactly as the single-prompt loop always has
                totals[m][k] += torch.einsum("bld,ld->l", h[k * b + lo : k * b + hi], vv)
    return [total / len(prompts) for total, (_, prompts) in zip(totals, reads)]


def _spans(labels: Sequence[int]) -> list[tuple[int, int, int]]:
    """(label, start, end) of each run of equal consecutive labels."""
    out: list[tuple[int, int, int]] = []
    for pos, label in enumerate(labels):
        if out and out[-1][0] == label:
            out[-1] = (label, out[-1][1], pos + 1)
        else:
            out.append((label, pos, pos + 1))
    return out


def residual_scale(
    tlm: TracedLM, tok: PreTrainedTokenizerBase, system: str | None, prompts: Sequence[str],
    completions: Sequence[str], layers: list[int], batch_size: int,
) -> dict[int, float]:
    """Median per-token residual norm after each layer, over real tokens of the given chats.

    The unit of preventative steering's alpha (:mod:`nnsight_inoc.measures.steering`): read with
    the same trace code as everything else (every position; padding comes back NaN and is
    dropped), on the model passed in (the base). ValueError if a median is not positive.
    """
    norms: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for s in range(0, len(prompts), batch_size):
        batch = encode_chats(tok, system, prompts[s : s + batch_size], completions[s : s + batch_size])
        T = batch.input_ids.shape[1]
        index = torch.arange(T).expand(batch.size, T).clone()
        index[batch.attention_mask == 0] = -1
        h = read_residuals(tlm, batch, index, layers=layers)  # (B, len(layers), T, d), NaN at padding
        n = h.norm(dim=-1)
        for j, layer in enumerate(layers):
            x = n[:, j]
            norms[layer].append(x[torch.isfinite(x)])
    out = {layer: float(torch.cat(norms[layer]).median()) for layer in layers}
    bad = {layer: s for layer, s in out.items() if not s > 0}
    if bad:
        raise ValueError(f"residual norm is not positive at layers {bad}; cannot scale alpha")
    return out
