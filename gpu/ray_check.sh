#!/usr/bin/env bash
# Runs ON the 2-GPU machine (device tool), from the checkout root, after `gpu/device.sh assemble`.
# The ALL-CAPS main conditions through a Ray cluster of this host, the same runs' first seed through the
# claim workers, and the comparison of every number (issue 19; gpu/README.md "Ray executor check").
#   bash gpu/ray_check.sh piece      move a carried .raywhlN/ folder (a piece of the Ray wheel, or the rest) to /root/raywhl
#   bash gpu/ray_check.sh install    join the pieces, check sha256, install Ray and what it lacks into /root/site
#   bash gpu/ray_check.sh ray        finetune --executor ray --ray-local-gpus 0,1 (resumes; stops before the call limit)
#   bash gpu/ray_check.sh claims     finetune --worker --seeds 0, one worker per GPU, into another run folder
#   bash gpu/ray_check.sh compare    tools/compare_runs.py claims vs ray (exact, then within TOL); bundles to $OUT
# One GPU (issue 25; gpu/README.md "Ray on one GPU"), the main conditions at one seed (SEED, default 0):
#   bash gpu/ray_check.sh onegpu     finetune --executor ray --ray-local-gpus $GPU --ray-gpus-per-task $GPU_SHARE into ray1/
#   bash gpu/ray_check.sh grouped    the same runs through the grouped executor (this process, the same GPU) into grouped/,
#                                    then `drift` on them
#   bash gpu/ray_check.sh kill       the onegpu sweep again into killed/; one task's worker is SIGKILLed by PID after
#                                    KILL_AFTER s (gpu/ray_kill.py); the driver's retry finishes the sweep (checked)
#   bash gpu/ray_check.sh compare1   grouped vs ray1 and ray1 vs killed (exact, then within TOL); logs/onegpu.json
# Env: RUN_SRC (run folder with data/, extract/, align/, sft_completions.json), CFG, RAY_ARGS (extra --ray-* flags),
#      SEEDS (claim workers' seeds, default 0), STUDY_TIMEOUT (seconds, default 540), TOL, RAY_CHECK_DIR, PYTHON;
#      one GPU: GPU (default 0), GPU_SHARE (default 0.33: three tasks at once; 0.34 fits two), SEED, KILL_AFTER
#      (default 30), RETRIES (default 2).
set -euo pipefail
export PYTHONUNBUFFERED=1 NNSIGHT_INOC_HOME=/root/m/home PYTHONPATH=/root/site:$PWD
SRC="${RUN_SRC:-artifacts/allcaps_qwen2.5-coder-1.5b-instruct}"
CFG="${CFG:-gpu/allcaps_gpu.toml}"
TOP="${RAY_CHECK_DIR:-/root/ray_check}"
PY="${PYTHON:-python3}"
RAY_RUN=$TOP/ray CLAIMS_RUN=$TOP/claims LOGS=$TOP/logs
RAY1_RUN=$TOP/ray1 GROUPED_RUN=$TOP/grouped KILLED_RUN=$TOP/killed CFG1=$TOP/onegpu_cfg.toml
OUT="${OUT:-/tmp/out}"
mkdir -p "$LOGS" "$OUT"

fresh() {  # a copy of the source run folder without finetune runs (and without their base-model cache)
  [ -d "$1/data" ] || { mkdir -p "$1" && cp -r "$SRC/." "$1/" && rm -rf "$1/finetune"; }
}

bundle() {  # the runs (no adapters, no claims), the provenance with the sweep's record, the logs
  local items=(logs) d
  for d in ray claims ray1 grouped killed; do
    [ -d "$TOP/$d/finetune" ] || continue
    items+=("$d/finetune" "$d/provenance.json" "$d/config.toml")
    for f in "$TOP/$d"/provenance.worker*.json; do [ -e "$f" ] && items+=("$d/${f##*/}"); done
  done
  [ -f "$CFG1" ] && items+=("${CFG1##*/}")
  tar -czf "$OUT/ray_check.tar.gz" -C "$TOP" --exclude='adapter' --exclude='claims/finetune/claims' "${items[@]}"
  ls -la "$OUT"
}

timed() {  # timed NAME CMD...: run with the call's time limit, log, and append the wall time to logs/times.txt
  local name=$1; shift
  local t0=$SECONDS rc
  set +e
  timeout "${STUDY_TIMEOUT:-540}" "$@" 2>&1 | tee -a "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  local cmd="$*"
  echo "$(date -u +%FT%TZ) $name exit $rc after $((SECONDS - t0)) s: ${cmd%%$'\n'*}" | tee -a "$LOGS/times.txt"
  return "$rc"
}

one_seed_cfg() {  # CFG with finetune.seeds = [SEED]: the one-GPU check's runs
  "$PY" -c "import sys; from nnsight_inoc.core.config import load_config, apply_overrides, dump_toml
print(dump_toml(apply_overrides(load_config(sys.argv[1]), {'finetune.seeds': [int(sys.argv[2])]})), end='')" \
    "$CFG" "${SEED:-0}" > "$CFG1.tmp" && mv "$CFG1.tmp" "$CFG1"
}

ray1() {  # ray1 RUN_DIR: sets RAY1, the one-GPU Ray sweep of the main conditions at one seed (fractional GPU per task)
  # shellcheck disable=SC2206  # RAY_ARGS is a list of flags
  RAY1=("$PY" cli.py finetune --which main --executor ray --ray-local-gpus "${GPU:-0}"
        --ray-gpus-per-task "${GPU_SHARE:-0.33}" --ray-retries "${RETRIES:-2}" ${RAY_ARGS:-} --config "$CFG1" --run-dir "$1")
}

compare_pair() {  # compare_pair NAME A B: exact (informational), then within TOL (the verdict)
  "$PY" tools/compare_runs.py "$2" "$3" --out "$LOGS/compare1_${1}_exact.json" | tee "$LOGS/compare1_$1.txt" || true
  "$PY" tools/compare_runs.py "$2" "$3" --tol "${TOL:-1e-5}" --out "$LOGS/compare1_${1}_tol.json" \
    | tail -1 | tee -a "$LOGS/compare1_$1.txt"
  return "${PIPESTATUS[0]}"
}

case "$1" in
  piece)
    mkdir -p /root/raywhl && mv .raywhl*/* /root/raywhl/ && ls /root/raywhl ;;
  install)
    cd /root/raywhl
    name=$(cat NAME)
    [ -f "$name" ] || { cat ray.part* > "$name" && rm ray.part*; }
    sha256sum -c SHA256SUMS
    cd - >/dev/null
    "$PY" gpu/install_wheels.py /root/raywhl "ray==${RAY_VERSION:-2.60.0}" --target /root/site
    "$PY" -c "import ray, sys; print('ray', ray.__version__, 'python', sys.version.split()[0])"
    nvidia-smi --query-gpu=index,name,memory.total --format=csv ;;
  ray)
    fresh "$RAY_RUN"; fresh "$CLAIMS_RUN"  # both here: the run folder travels with this call only
    rc=0
    # shellcheck disable=SC2086  # RAY_ARGS is a list of flags
    timed ray "$PY" cli.py finetune --which main --executor ray --ray-local-gpus 0,1 ${RAY_ARGS:-} \
      --config "$CFG" --run-dir "$RAY_RUN" || rc=$?
    bundle
    exit "$rc" ;;
  claims)
    fresh "$CLAIMS_RUN"
    rc=0
    # one claim worker per GPU (what `finetune --executor workers --gpus 0,1` starts), restricted to the first seed to save device time
    cmd="$PY cli.py finetune --which main --worker --seeds ${SEEDS:-0} --config $CFG --run-dir $CLAIMS_RUN"
    timed claims bash -c "CUDA_VISIBLE_DEVICES=0 NNSIGHT_INOC_WORKER=0 $cmd > $LOGS/claims_w0.log 2>&1 & a=\$!
      CUDA_VISIBLE_DEVICES=1 NNSIGHT_INOC_WORKER=1 $cmd > $LOGS/claims_w1.log 2>&1 & b=\$!
      wait \$a; ra=\$?; wait \$b; rb=\$?; exit \$((ra | rb))" || rc=$?
    bundle
    exit "$rc" ;;
  compare)
    # exact first (informational), then within TOL (default 1e-5; fp32 reruns of one GPU code path differed by
    # up to 1.4e-6 in results/bench/precision_ab), whose verdict is the step's exit status
    "$PY" tools/compare_runs.py "$CLAIMS_RUN" "$RAY_RUN" --out "$LOGS/compare_exact.json" | tee "$LOGS/compare.txt" || true
    rc=0
    "$PY" tools/compare_runs.py "$CLAIMS_RUN" "$RAY_RUN" --tol "${TOL:-1e-5}" --out "$LOGS/compare_tol.json" \
      | tail -1 | tee -a "$LOGS/compare.txt" || rc=$?
    bundle
    exit "$rc" ;;
  onegpu)
    fresh "$RAY1_RUN"; one_seed_cfg
    rc=0
    ray1 "$RAY1_RUN"
    timed onegpu "${RAY1[@]}" || rc=$?
    bundle
    exit "$rc" ;;
  grouped)
    fresh "$GROUPED_RUN"; one_seed_cfg
    rc=0
    # the grouped executor trains (K runs of the seed per pass of the base); `drift` then measures them (batched)
    timed grouped "$PY" cli.py finetune --which main --executor grouped --config "$CFG1" --run-dir "$GROUPED_RUN" \
      && timed grouped_drift "$PY" cli.py drift --which main --config "$CFG1" --run-dir "$GROUPED_RUN" || rc=$?
    bundle
    exit "$rc" ;;
  kill)
    fresh "$KILLED_RUN"; one_seed_cfg
    scratch=$TOP/scratch_killed  # the sweep's TMPDIR, inherited by its Ray workers: their task folders show the PIDs
    rm -rf "$scratch" && mkdir -p "$scratch"
    rm -f "$LOGS/kill.json"
    rc=0
    ray1 "$KILLED_RUN"
    TMPDIR=$scratch timed kill "${RAY1[@]}" &
    sweep=$!
    # the finetune process itself (the timed/timeout/tee wrappers are its ancestors): the one whose TMPDIR is scratch
    for _ in $(seq 1 100); do
      pid=$(pgrep -f -n -- "cli.py finetune .*--run-dir $KILLED_RUN" || true)
      [ -n "$pid" ] && break
      sleep 0.2
    done
    "$PY" gpu/ray_kill.py kill "$scratch" "${pid:-0}" --after "${KILL_AFTER:-30}" \
      --out "$LOGS/kill.json" 2>&1 | tee -a "$LOGS/kill_watch.log" || rc=1
    wait "$sweep" || rc=$?
    if [ -f "$LOGS/kill.json" ]; then
      "$PY" gpu/ray_kill.py check "$KILLED_RUN" "$LOGS/kill.json" 2>&1 | tee -a "$LOGS/kill_watch.log" || rc=1
    fi
    bundle
    exit "$rc" ;;
  compare1)
    # grouped vs per-run Ray: fp32 round-off of the K-run batched steps (TOL, default 1e-5); the killed sweep
    # vs the uninterrupted one: the same code path, so exact is expected in fp32 (TOL is the verdict either way)
    rc=0
    compare_pair grouped_vs_ray1 "$GROUPED_RUN" "$RAY1_RUN" || rc=1
    compare_pair ray1_vs_killed "$RAY1_RUN" "$KILLED_RUN" || rc=1
    "$PY" gpu/ray_kill.py record "$TOP" --out "$LOGS/onegpu.json"
    bundle
    exit "$rc" ;;
  *) echo "unknown step $1" >&2; exit 2 ;;
esac
