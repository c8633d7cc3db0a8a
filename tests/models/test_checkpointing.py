"""Activation checkpointing's context: the blocks it wraps, that the model is exactly restored, and its refusals.

The numbers it must not change (losses, LoRA gradients and weights, probes, intervened steps) are pinned in
``tests/train/test_grouped_checkpointing.py``.
"""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from pydantic import ValidationError

from nnsight_inoc.core.config import ExecutionConfig, StudyConfig
from nnsight_inoc.models.checkpointing import LEVELS, Checkpointed, activation_checkpointing, checkpointed_blocks
from nnsight_inoc.models.tiny import tiny_qwen2
from nnsight_inoc.trace.tracing import wrap


@pytest.fixture
def model():
    m = tiny_qwen2(num_layers=2, seed=1)
    m.requires_grad_(False)
    return m


def _slots(model: torch.nn.Module) -> dict[str, object]:
    """Every module's own ``forward`` instance attribute (nnsight's controller where wrapped), by name."""
    return {n: m.__dict__.get("forward") for n, m in model.named_modules()}


def test_config_levels_are_the_module_levels_and_a_wrong_value_is_refused():
    assert get_args(ExecutionConfig.model_fields["activation_checkpointing"].annotation) == LEVELS
    assert ExecutionConfig().activation_checkpointing == "none"
    assert StudyConfig.model_validate({"execution": {"activation_checkpointing": "attn_mlp"}})
    for bad in ("layer", "full", "MLP", ""):
        with pytest.raises(ValidationError, match="activation_checkpointing"):
            StudyConfig.model_validate({"execution": {"activation_checkpointing": bad}})
    with pytest.raises(ValueError, match="must be one of"):
        checkpointed_blocks(tiny_qwen2(num_layers=1), "layer")


def test_blocks_per_level(model):
    assert checkpointed_blocks(model, "none") == []
    assert [n for n, _ in checkpointed_blocks(model, "mlp")] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert [n for n, _ in checkpointed_blocks(model, "attn_mlp")] == [
        "model.layers.0.self_attn", "model.layers.0.mlp", "model.layers.1.self_attn", "model.layers.1.mlp"]


@pytest.mark.parametrize("wrapped", [False, True])
def test_model_is_restored_exactly_also_after_an_error(model, wrapped):
    if wrapped:
        wrap(model)  # nnsight installs its controller in each module's `forward` slot
    before = _slots(model)
    ids = torch.randint(3, 300, (2, 7))
    want = model(input_ids=ids).logits
    with activation_checkpointing(model, "attn_mlp") as names:
        assert len(names) == 4
        assert all(isinstance(m.__dict__["forward"], Checkpointed) for _, m in checkpointed_blocks(model, "attn_mlp"))
        if wrapped:  # the wrapper calls what was in the slot: nnsight's controller stays in the call path
            assert all(m.__dict__["forward"].inner is before[n] for n, m in checkpointed_blocks(model, "attn_mlp"))
    after = _slots(model)
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    with pytest.raises(RuntimeError, match="boom"):
        with activation_checkpointing(model, "mlp"):
            raise RuntimeError("boom")
    assert all(_slots(model)[n] is before[n] for n in before)
    assert torch.equal(model(input_ids=ids).logits, want)


def test_refuses_nesting_and_a_kv_cache_with_grad(model):
    ids = torch.randint(3, 300, (2, 7))
    with activation_checkpointing(model, "mlp"):
        with pytest.raises(RuntimeError, match="already on"):
            with activation_checkpointing(model, "attn_mlp"):
                pass
    with activation_checkpointing(model, "attn_mlp"):
        with torch.no_grad():  # reads and generation: the blocks run as they are, a cache is fine
            assert model(input_ids=ids, use_cache=True).logits.shape[:2] == (2, 7)
        emb = model.model.embed_tokens(ids).requires_grad_(True)
        with pytest.raises(ValueError, match="use_cache=False"):
            model(inputs_embeds=emb, use_cache=True)
        assert model(inputs_embeds=emb, use_cache=False).logits.requires_grad


def test_the_blocks_really_recompute_in_the_backward_pass(model):
    calls = {"mlp": 0, "attn": 0}
    layer = model.model.layers[0]
    h1 = layer.mlp.gate_proj.register_forward_hook(lambda *_: calls.__setitem__("mlp", calls["mlp"] + 1))
    h2 = layer.self_attn.q_proj.register_forward_hook(lambda *_: calls.__setitem__("attn", calls["attn"] + 1))
    ids = torch.randint(3, 300, (2, 7))
    try:
        for level, want in (("none", (1, 1)), ("mlp", (2, 1)), ("attn_mlp", (2, 2))):
            calls.update(mlp=0, attn=0)
            emb = model.model.embed_tokens(ids).requires_grad_(True)
            with activation_checkpointing(model, level):
                model(inputs_embeds=emb, use_cache=False).logits.sum().backward()
            assert (calls["mlp"], calls["attn"]) == want, level
    finally:
        h1.remove()
        h2.remove()
