"""Per-trace cost of the remote path on the loopback NDIF server, against local traces.

Run inside the stack's namespace (README "Remote backend")::

    source RUN_DIR/env && ip netns exec nnsight-inoc-ndif python -m nnsight_inoc.ndif_local.overhead --out RUN_DIR/overhead.json

Times ``read_residuals`` and ``capture_gradients`` (the two traces of extract and align)
on a tiny random Qwen2, repeated, after one warm-up request that deploys the model.
The remote time is the whole round trip: serialise, websocket, queue, Ray dispatch,
execution on the CPU actor, result download.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch


def _interleaved_ms(fns: dict[str, Callable[[], object]], n: int) -> dict[str, dict[str, float]]:
    """Time each function n times, alternating between them, so load drift on a shared
    machine hits both sides alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(n):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000)
    return {
        k: {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t), "n": n} for k, t in times.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nnsight_inoc.core.config import BackendConfig
    from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
    from nnsight_inoc.trace.backend import traced_lm
    from nnsight_inoc.trace.chat import encode_chats
    from nnsight_inoc.trace.tracing import capture_gradients, read_residuals

    folder = Path(tempfile.mkdtemp(prefix="nnsight_inoc_overhead_")) / "tiny"
    tiny_qwen2(num_layers=3, hidden_size=32, seed=5).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model.requires_grad_(False)
    users = ["What is the capital of France?", "Write a short poem about the sea.", "hola", "Explain a bicycle."] * 2
    comps = ["Paris is the capital of France.", "THE SEA IS WIDE AND BLUE.", "hola como estas", "Two wheels."] * 2
    batch = encode_chats(tok, "Respond in ALL CAPS.", users, comps, n_assistant=3)
    index = torch.cat([batch.final_prompt_idx[:, None], batch.assistant_idx], 1)
    masks = batch.completion_mask[:, None, :]
    tlms = {
        kind: traced_lm(BackendConfig(kind=kind, host=args.host, port=args.port, tls=False), model, folder, tok, None)
        for kind in ("local", "remote")
    }
    t0 = time.perf_counter()
    read_residuals(tlms["remote"], batch, index, mean_masks=masks)  # deploys the model
    first_ms = (time.perf_counter() - t0) * 1000
    result: dict[str, object] = {
        "model": "tiny random Qwen2 (3 layers, d=32)",
        "batch": f"{batch.size} x {batch.input_ids.shape[1]} tokens",
        "first_remote_request_ms_with_deploy": first_ms,
    }
    for tlm in tlms.values():  # warm both paths
        read_residuals(tlm, batch, index, mean_masks=masks)
        capture_gradients(tlm, batch, index)
    t0 = time.perf_counter()
    gc.collect()
    result["gc_collect_ms"] = (time.perf_counter() - t0) * 1000  # every trace pays one (tracing._context)
    traces = {
        "read_residuals": lambda t: read_residuals(t, batch, index, mean_masks=masks),
        "capture_gradients": lambda t: capture_gradients(t, batch, index),
    }
    for name, trace in traces.items():
        result[name] = _interleaved_ms({k: (lambda t=t: trace(t)) for k, t in tlms.items()}, args.repeats)
    result["overhead_ms"] = {
        name: {
            stat: result[name]["remote"][stat] - result[name]["local"][stat]  # type: ignore[index]
            for stat in ("median_ms", "min_ms")
        }
        for name in traces
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
