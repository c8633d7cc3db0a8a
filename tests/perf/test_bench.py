"""The benchmark's reference path equals the nnsight path, and a tiny CPU run fills every field."""

from __future__ import annotations

import math

import torch

from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.trace.tracing import capture_gradients, wrap
from perf.bench import (
    bench_model,
    matmul_params,
    qwen7b_shape,
    reference_capture,
    reference_capture_host,
    synthetic_batch,
)


def test_reference_equals_nnsight_and_bench_runs():
    tok = tiny_tokenizer()
    model = tiny_qwen2(num_layers=2, seed=4).requires_grad_(False)
    batch = synthetic_batch(tok, 2, 9, torch.device("cpu"))
    index = torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], 1)
    got = capture_gradients(wrap(model), batch, index)
    loss, grads = reference_capture(model, batch, index)
    torch.testing.assert_close(got.grads, grads, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(got.loss, loss)
    host_loss, host_grads = reference_capture_host(model, batch, index)  # the like-for-like outputs
    assert host_grads.dtype == got.grads.dtype == torch.float32 and host_grads.device == got.grads.device
    torch.testing.assert_close(host_grads, got.grads, atol=1e-6, rtol=1e-4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = bench_model(model, tok, "tiny", batch_size=2, words=9, reps=1, generate_tokens=4)
    assert r["grad_check_relative_diff"] < 1e-3 and math.isfinite(r["nnsight_over_raw"])
    assert r["nnsight_over_raw_device"] == r["nnsight_s"] / r["raw_hooks_device_s"]
    assert r["lora_tokens_per_s"] > 0 and r["generation_tokens_per_s"] > 0
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)  # LoRA unloaded


def test_7b_shape_parameter_count():
    m = qwen7b_shape(torch.bfloat16, "meta")
    n = matmul_params(m)
    assert 7.0e9 < n < 7.7e9  # 7.07B non-embedding matmuls + 0.54B lm_head


def test_device_profile_on_cpu_reports_wall_time_and_no_kernels():
    """Off CUDA there are no device kernels to count; the wall time is still the call's, per repetition."""
    from perf.bench import device_profile

    calls = []
    x = torch.randn(64, 64)
    r = device_profile(lambda: calls.append(float((x @ x).sum())), torch.device("cpu"), reps=3)
    assert len(calls) == 4  # one warm-up, three profiled
    assert r["wall_s"] > 0 and r["kernel_s"] == 0 and r["kernels_launched"] == 0 and r["device_busy"] == 0
    assert r["host_syncs"] == {} and r["top_kernels_s"] == {}
