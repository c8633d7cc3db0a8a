"""Where the time of one nnsight gradient trace goes, and whether repeated traces hold memory.

Issue 7: ``capture_gradients`` was ~4x slower than raw hooks on an H200 with a fixed
~0.3 s per trace. This script separates that overhead into its pieces, on any device:

* the heap: tracked objects, and the cost of ``gc.collect()`` (full, young generations,
  the old frozen-heap collection and the young-generation one ``tracing`` now does) in this process;
* medians of raw hooks (``bench.reference_capture_host``, the same outputs as ``capture_gradients``;
  ``raw_hooks_device``: leaving them on the device) and ``capture_gradients`` under
  three post-trace collection policies: ``full`` (the old per-trace ``gc.collect()``),
  ``freeze`` (the 2026-11-27 version), ``young`` (what ``trace_ctx.collect_trace_cycles`` does now)
  and ``none``; the
  variants run round-robin so a shared machine's drift hits all of them alike;
* a cProfile of one ``capture_gradients`` call without collection, grouped by package,
  plus nnsight's own functions by cumulative time;
* :func:`bench.device_profile` of raw hooks and of ``capture_gradients``: kernel time against wall
  time, kernels launched and host syncs, which separate device work from host pacing on a GPU;
* memory over N repeated traces per policy: RSS (CPU), ``torch.cuda.memory_allocated``
  (CUDA), live ``torch.Tensor`` objects, and how many full collections Python ran on its
  own. The ``none`` run stops early once RSS or device memory grew by --mem-limit-gb.

Usage (CPU here; the same on a GPU with --device cuda --dtype bfloat16)::

    PYTHONPATH=. python perf/profile_trace.py --model smollm2-135m-instruct \\
        --device cpu --dtype float32 --batch 2 --words 18 --out results/bench/profile_cpu.json
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import psutil
import torch

from nnsight_inoc.models.load import load_model
from nnsight_inoc.models.tiny import tiny_qwen2, tiny_tokenizer
from nnsight_inoc.trace import context as trace_ctx
from nnsight_inoc.trace import tracing
from perf.bench import (
    bench_model,
    device_profile,
    reference_capture,
    reference_capture_host,
    sync,
    synthetic_batch,
    timed_call,
)

CURRENT = trace_ctx.collect_trace_cycles


@contextlib.contextmanager
def _full_collect() -> Iterator[None]:
    """The old behaviour: a full ``gc.collect()`` of the whole heap after every trace."""
    try:
        yield
    finally:
        gc.collect()


@contextlib.contextmanager
def _freeze_collect() -> Iterator[None]:
    """The 2026-11-27 behaviour: freeze the pre-trace heap unless something froze objects already
    (then a plain full collection). Kept to show why it failed on Python 3.12, which freezes a few
    hundred objects at start-up, so this falls back to the full scan there."""
    owns = gc.get_freeze_count() == 0
    if owns:
        gc.freeze()
    try:
        yield
    finally:
        try:
            gc.collect()
        finally:
            if owns:
                gc.unfreeze()


@contextlib.contextmanager
def _no_collect() -> Iterator[None]:
    yield


# "young" is what trace_ctx.collect_trace_cycles does now (collector paused in the trace, then gen 0).
POLICIES: dict[str, Callable[[], Any]] = {
    "full": _full_collect, "freeze": _freeze_collect, "young": CURRENT, "none": _no_collect,
}


def _median_of(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def heap_costs(reps: int) -> dict[str, Any]:
    """Tracked objects and what one collection of each kind costs in this process."""

    def empty(policy: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            with policy():
                pass
        return run

    return {
        "tracked_objects": len(gc.get_objects()),
        "gc_collect_full_s": _median_of(gc.collect, reps),
        "gc_collect_gen1_s": _median_of(lambda: gc.collect(1), reps),
        "gc_collect_gen0_s": _median_of(lambda: gc.collect(0), reps),
        "python": sys.version.split()[0],
        "freeze_count_at_start": gc.get_freeze_count(),
        "freeze_collect_empty_window_s": _median_of(empty(_freeze_collect), reps),
        "young_collect_empty_window_s": _median_of(empty(CURRENT), reps),
    }


def timings(variants: dict[str, Callable[[], Any]], device: torch.device, reps: int) -> dict[str, dict[str, Any]]:
    """Round-robin repetitions of each variant (after one warm-up each); medians and all times."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for k, fn in variants.items():
            times[k].append(timed_call(fn, device)[1])
    return {k: {"median_s": statistics.median(v), "times_s": v} for k, v in times.items()}


def _group(path: str) -> str:
    for key in ("nnsight_inoc", "nnsight", "transformers", "torch", "greenlet"):
        if f"/{key}/" in path or path.startswith(key):
            return key
    if path == "~":
        return "C builtins (torch ops, greenlet switches, ...)"
    return "other python"


def profile_one(fn: Callable[[], Any], top: int) -> dict[str, Any]:
    """cProfile of one call: own time by package, and nnsight's functions by cumulative time."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    wall = time.perf_counter() - t0
    st = pstats.Stats(prof)
    by_pkg: dict[str, float] = {}
    rows = []
    for (path, line, name), (_cc, ncalls, tottime, cumtime, _callers) in st.stats.items():  # type: ignore[attr-defined]
        by_pkg[_group(path)] = by_pkg.get(_group(path), 0.0) + tottime
        rows.append((cumtime, tottime, ncalls, f"{path.split('site-packages/')[-1]}:{line}({name})"))
    nn_rows = sorted((r for r in rows if "nnsight/" in r[3] and "nnsight_inoc" not in r[3]), reverse=True)[:top]
    builtins = sorted((r for r in rows if r[3].startswith("~")), key=lambda r: -r[1])[:top]
    fmt = lambda r: {"cum_s": r[0], "own_s": r[1], "calls": r[2], "function": r[3]}  # noqa: E731
    return {
        "wall_s_under_profiler": wall,
        "own_time_by_package_s": dict(sorted(by_pkg.items(), key=lambda kv: -kv[1])),
        "nnsight_functions_by_cumulative": [fmt(r) for r in nn_rows],
        "builtins_by_own_time": [fmt(r) for r in builtins],
    }


def _live_tensors() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def memory_run(fn: Callable[[], Any], device: torch.device, n: int, limit_bytes: float, own_collect: bool) -> dict[str, Any]:
    """n traces with no collection between them but the policy's own and Python's automatic ones.

    ``own_collect``: the policy itself runs one full collection per trace (subtracted from the count)."""
    gc.collect()
    proc = psutil.Process()
    dev_mem = (lambda: torch.cuda.memory_allocated(device)) if device.type == "cuda" else (lambda: 0)
    rss0, dev0, tens0 = proc.memory_info().rss, dev_mem(), _live_tensors()
    full0 = gc.get_stats()[2]["collections"]
    rss, dev = [], []
    done = 0
    for _ in range(n):
        fn()
        sync(device)
        done += 1
        rss.append(proc.memory_info().rss - rss0)
        dev.append(dev_mem() - dev0)
        if max(rss[-1], dev[-1]) > limit_bytes:
            break
    out = {
        "traces": done,
        "stopped_at_limit": done < n,
        "live_tensors_before": tens0,
        "live_tensors_after": _live_tensors(),
        # generation-2 collections other than the policy's own one per trace ("young" makes none)
        "automatic_full_collections": gc.get_stats()[2]["collections"] - full0 - (done if own_collect else 0),
        "rss_growth_mb_max": max(rss) / 1e6,
        "rss_growth_mb_last": rss[-1] / 1e6,
        "device_alloc_growth_mb_max": max(dev) / 1e6,
        "device_alloc_growth_mb_last": dev[-1] / 1e6,
    }
    gc.collect()
    return out


@click.command()
@click.option("--model", default="smollm2-135m-instruct", show_default=True,
              help="A load_model spec, or tiny-N: a random Qwen2 of hidden size 32 with N layers (fixed costs only).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--batch", default=2, show_default=True)
@click.option("--words", default=18, show_default=True, help="Words per prompt and per completion (bench: 90).")
@click.option("--reps", default=7, show_default=True)
@click.option("--mem-traces", default=50, show_default=True)
@click.option("--mem-limit-gb", default=3.0, show_default=True, help="Stop a memory run once growth passes this.")
@click.option("--top", default=15, show_default=True)
@click.option("--bench/--no-bench", default=False, show_default=True,
              help="Also run bench.bench_model (nnsight/raw ratio) with the full, the freeze and the young collection.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the numbers as JSON here.")
def main(model: str, device: str, dtype: str, batch: int, words: int, reps: int, mem_traces: int,
         mem_limit_gb: float, top: int, bench: bool, out: str | None) -> None:
    dev = torch.device(device)
    if model.startswith("tiny-"):
        tok = tiny_tokenizer()
        hf = tiny_qwen2(num_layers=int(model[5:]), dtype=getattr(torch, dtype)).to(dev).requires_grad_(False).eval()
    else:
        lm = load_model(model, device=device, dtype=dtype)
        hf, tok = lm.hf_model, lm.tokenizer
    b = synthetic_batch(tok, batch, words, dev)
    index = torch.cat([b.final_prompt_idx[:, None], b.assistant_idx], 1)
    tlm = tracing.wrap(hf)
    original = trace_ctx.collect_trace_cycles

    def nnsight_with(policy: str) -> Callable[[], Any]:
        def run() -> Any:
            trace_ctx.collect_trace_cycles = POLICIES[policy]
            try:
                return tracing.capture_gradients(tlm, b, index)
            finally:
                trace_ctx.collect_trace_cycles = original
        return run

    got = nnsight_with("young")()
    ref_loss, ref_g = reference_capture(hf, b, index)
    if not torch.equal(got.grads, ref_g.float().cpu()):
        raise AssertionError("nnsight and raw-hook gradients differ; not profiling unequal code")
    if not torch.equal(nnsight_with("full")().grads, got.grads):
        raise AssertionError("the collection policy changed the gradients")

    result: dict[str, Any] = {
        "model": model, "device": str(dev), "dtype": dtype, "batch": batch, "words": words,
        "tokens_per_row": int(b.input_ids.shape[1]), "tokens_per_batch": int(b.attention_mask.sum()),
        "layers": tlm.n_layers, "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
    }
    result["heap"] = heap_costs(reps)
    t = timings({"raw_hooks": lambda: reference_capture_host(hf, b, index),
                 "raw_hooks_device": lambda: reference_capture(hf, b, index),
                 **{f"nnsight_{p}": nnsight_with(p) for p in POLICIES}}, dev, reps)
    result["timings"] = t
    raw = t["raw_hooks"]["median_s"]
    result["ratios_over_raw"] = {k: v["median_s"] / raw for k, v in t.items()}
    result["profile_nnsight_none"] = profile_one(nnsight_with("none"), top)
    # kernel time vs wall time per path: the same kernels at a different pace means the host sets it
    result["device_profile"] = {"raw_hooks": device_profile(lambda: reference_capture_host(hf, b, index), dev),
                                "nnsight_young": device_profile(nnsight_with("young"), dev)}
    if bench:
        result["bench_model"] = {}
        for p in ("full", "freeze", "young"):
            trace_ctx.collect_trace_cycles = POLICIES[p]
            try:
                r = bench_model(hf, tok, model, batch, words, reps=reps, generate_tokens=4)
            finally:
                trace_ctx.collect_trace_cycles = original
            result["bench_model"][p] = {k: r[k] for k in ("nnsight_s", "raw_hooks_s", "nnsight_over_raw",
                                                          "raw_hooks_device_s", "nnsight_over_raw_device")}
    limit = mem_limit_gb * 1e9
    if mem_traces > 0:
        result["memory"] = {p: memory_run(nnsight_with(p), dev, mem_traces, limit, p == "full")
                            for p in ("young", "full", "none")}

    print(json.dumps({k: v for k, v in result.items() if k != "profile_nnsight_none"}, indent=1, default=str))
    prof = result["profile_nnsight_none"]
    print(f"\ncProfile of one capture_gradients (no collection): {prof['wall_s_under_profiler']:.3f} s under profiler")
    for k, v in prof["own_time_by_package_s"].items():
        print(f"  own time {k:50s} {v:8.4f} s")
    print("  nnsight functions by cumulative time:")
    for r in prof["nnsight_functions_by_cumulative"]:
        print(f"    {r['cum_s']:8.4f} cum {r['own_s']:8.4f} own {r['calls']:6d} calls  {r['function']}")
    print("  builtins by own time:")
    for r in prof["builtins_by_own_time"]:
        print(f"    {r['own_s']:8.4f} own {r['calls']:6d} calls  {r['function']}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
