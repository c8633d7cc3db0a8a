#!/usr/bin/env bash
# Runs ON the GPU machine (device tool), from the checkout root, after `gpu/device.sh assemble`.
#   bash gpu/lanes.sh start PHASE     copy the code to /root/lanes/code and start PHASE's lanes detached (setsid)
#   bash gpu/lanes.sh watch SECONDS   wait for the running phase (at most SECONDS), then bundle everything to $OUT
# Why detached: one device call lasts at most 10 minutes, a phase longer; its processes outlive the call and the
# next `watch` picks them up (gpu/README.md). Phases (issue 17 and 19, 2 x H200):
#   clock: GPU 0 times the whole ALL-CAPS study (perf/study_bench.py, grouped executor); GPU 1 meanwhile runs
#          the 7B bench, then, once GPU 0's align is done, the TF32 capture A/B, the cuDNN bf16 NaN check and
#          issue 16's controls probe (experiments/controls_probe.py) on copies of that run folder.
#   clock2: the same study on both GPUs (the overlapping two-GPU schedule).
#   ray:   the ALL-CAPS main conditions at seed 0 through a local Ray cluster of this host (one worker per GPU),
#          then the claim workers, then every number compared (gpu/ray_check.sh); needs Ray installed
#          (ray_check.sh piece/install) and the clock phase's extract/align.
set -uo pipefail
ROOT=/root/lanes
CODE=$ROOT/code
RUNS=$ROOT/runs
OUTD=$ROOT/out
export PYTHONUNBUFFERED=1 NNSIGHT_INOC_HOME=/root/m/home PYTHONPATH=/root/site:$CODE
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

lane() {  # lane NAME GPU CMD...: one command of a lane, logged, never stopping the lane on failure
  local name=$1 gpu=$2; shift 2
  echo "=== $(date +%T) [$name gpu $gpu] $*" >> "$ROOT/$name.log"
  (cd "$CODE" && CUDA_VISIBLE_DEVICES=$gpu "$@") >> "$ROOT/$name.log" 2>&1
  echo "=== $(date +%T) [$name] exit $?" >> "$ROOT/$name.log"
}

wait_for() { local f=$1; for _ in $(seq 1 1800); do [ -e "$f" ] && return 0; sleep 2; done; return 1; }

phase_clock() {
  mkdir -p "$RUNS/clock1" && cp -r "$CODE/artifacts/gpu_allcaps/data" "$RUNS/clock1/"
  ( lane clock 0 python3 perf/study_bench.py --config gpu/allcaps_clock_gpu.toml --run-dir "$RUNS/clock1" \
      --out "$OUTD/study_bench_1gpu.json" --gpus 0 ) &
  (
    lane side 1 python3 cli.py bench --config gpu/allcaps_clock_gpu.toml --scale 7b --dtype bfloat16 --batch-size 32 \
      --out-dir "$OUTD/bench_7b_b32"
    wait_for "$RUNS/clock1/align/align_summary.json"
    mkdir -p "$RUNS/exp" && (cd "$RUNS/clock1" && tar -cf - --exclude=finetune --exclude='provenance*' . ) | (cd "$RUNS/exp" && tar -xf -)
    lane side 1 python3 experiments/precision_check.py --config gpu/allcaps_clock_gpu.toml --run-dir "$RUNS/exp" \
      --variant tf32 --n 64
    lane side 1 python3 perf/bf16_nan_check.py --config gpu/allcaps_clock_gpu.toml --run-dir "$RUNS/exp" \
      --condition inoc --steps 12 --out "$OUTD/bf16_nan_check.json"
    # issue 16 before any training: the content-leak dial, loss split, alignment vs loss reduction, transfer
    mkdir -p "$RUNS/ctl" && (cd "$RUNS/exp" && tar -cf - --exclude='experiments' --exclude='stages' --exclude='provenance*' . ) \
      | (cd "$RUNS/ctl" && tar -xf -)
    lane side 1 python3 experiments/controls_probe.py --config gpu/allcaps_gpu.toml --run-dir "$RUNS/ctl" --n 200 \
      --out "$OUTD/controls_probe_allcaps.json"
    lane side 1 python3 cli.py bench --config gpu/allcaps_clock_gpu.toml --scale real --dtype float32 \
      --out-dir "$OUTD/bench_real_fp32"
  ) &
  wait
}

phase_clock2() {
  mkdir -p "$RUNS/clock2" && cp -r "$CODE/artifacts/gpu_allcaps/data" "$RUNS/clock2/"
  lane clock2 0,1 python3 perf/study_bench.py --config gpu/allcaps_clock_gpu.toml --run-dir "$RUNS/clock2" \
    --out "$OUTD/study_bench_2gpu.json" --gpus 0,1
}

phase_ray() {  # issue 19: the ALL-CAPS main conditions at seed 0 through Ray (one worker per GPU) and the claim workers
  python3 -c "from nnsight_inoc.core.config import load_config, apply_overrides; from nnsight_inoc.core.config import dump_toml
print(dump_toml(apply_overrides(load_config('$CODE/gpu/allcaps_clock_gpu.toml'),
      {'finetune.seeds': [0], 'execution.executor': 'sequential'})), end='')" > "$RUNS/ray_cfg.toml"
  mkdir -p "$RUNS/ray_src" && (cd "$RUNS/clock1" && tar -cf - --exclude=finetune --exclude='provenance*' \
    --exclude=stages --exclude='report.*' --exclude=experiments .) | (cd "$RUNS/ray_src" && tar -xf -)
  export RUN_SRC=$RUNS/ray_src CFG=$RUNS/ray_cfg.toml STUDY_TIMEOUT=1500 RAY_CHECK_DIR=$RUNS/raycheck OUT=$OUTD/ray
  lane ray 0,1 bash gpu/ray_check.sh ray
  lane ray 0,1 bash gpu/ray_check.sh claims
  lane ray 0,1 bash gpu/ray_check.sh compare
}

case "${1:-}" in
  start)
    phase=${2:?phase: clock, clock2 or ray}
    mkdir -p "$ROOT" "$OUTD" "$RUNS"
    rm -f "$ROOT/done.$phase"
    rm -rf "$CODE.new" && mkdir -p "$CODE.new" && tar -cf - --exclude='./.gpu*' --exclude=./.whl --exclude=./results . \
      | (cd "$CODE.new" && tar -xf -) && rm -rf "$CODE" && mv "$CODE.new" "$CODE"
    echo "$phase" > "$ROOT/phase"
    setsid nohup bash -c "bash '$CODE/gpu/lanes.sh' run $phase; touch '$ROOT/done.$phase'" \
      > "$ROOT/supervisor.$phase.log" 2>&1 < /dev/null &
    echo "phase $phase started, pid $!" ;;
  run)
    "phase_$2" ;;
  watch)
    phase=$(cat "$ROOT/phase")
    for _ in $(seq 1 "${2:-500}"); do [ -e "$ROOT/done.$phase" ] && break; sleep 1; done
    [ -e "$ROOT/done.$phase" ] && echo "phase $phase done" || echo "phase $phase still running"
    nvidia-smi --query-gpu=index,memory.used,utilization.gpu --format=csv,noheader
    tail -n 3 "$ROOT"/*.log
    for r in "$RUNS"/*/; do
      n=$(basename "$r")
      tar -czf "$OUT/run_$n.tar.gz" -C "$RUNS" --exclude='adapter' --exclude='.adapter*' --exclude='cond_*.pt' \
        --exclude='claims' --exclude='*.safetensors' --exclude='directions.pt' --exclude='rows.csv.gz' "$n" 2>/dev/null
    done
    tar -czf "$OUT/out.tar.gz" -C "$ROOT" out $(cd "$ROOT" && ls *.log) 2>/dev/null
    ls -la "$OUT" ;;
  *) echo "usage: lanes.sh start PHASE | watch SECONDS" >&2; exit 2 ;;
esac
