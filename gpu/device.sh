#!/usr/bin/env bash
# Runs ON the GPU machine (device tool), from the checkout root. See gpu/README.md.
#   bash gpu/device.sh chunk            move carried .gpu/c* model pieces to /root/m
#   bash gpu/device.sh assemble         join the pieces, check sha256, convert to float safetensors once
#   bash gpu/device.sh study ARGS...    python cli.py ARGS with the run folder at /root/run; bundle to $OUT
set -euo pipefail
export PYTHONUNBUFFERED=1 NNSIGHT_INOC_HOME=/root/m/home
GGUF_SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
mkdir -p /root/m
if [ -d .whl ] && [ ! -f /root/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site .whl/*.whl
  touch /root/site/.done
fi
export PYTHONPATH=/root/site:$PWD
case "$1" in
  chunk)
    mv .gpu*/c* /root/m/ && ls /root/m | wc -l ;;
  assemble)
    if [ ! -f /root/m/model.gguf ]; then cat /root/m/c* > /root/m/model.gguf && rm /root/m/c*; fi
    echo "$GGUF_SHA  /root/m/model.gguf" | sha256sum -c -
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, transformers, peft, nnsight; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'nnsight', nnsight.__version__)"
    time python3 -c "from nnsight_inoc.models.load import load_model; m = load_model('/root/m/model.gguf'); print(m.name, m.sha256)" ;;
  study)
    shift
    run=/root/run
    mkdir -p "$run"
    src="${RUN_SRC:-artifacts/allcaps_qwen2.5-coder-1.5b-instruct}"
    [ -d "$run/data" ] || cp -r "$src/." "$run/"
    set +e
    # Stop before the call's 600 s limit so the bundle below is still written; stages resume next call.
    timeout "${STUDY_TIMEOUT:-540}" python3 cli.py "$@" --run-dir "$run" 2>&1 | tee -a "$run/device_log.txt"
    rc=${PIPESTATUS[0]}
    set -e
    tar -czf "$OUT/bundle.tar.gz" -C "$run" --exclude='cond_*.pt' --exclude='sft_completions.json' \
      --exclude='adapter' --exclude='*.safetensors' .
    (cd "$run" && ls align/cond_*.pt >/dev/null 2>&1 && tar -czf "$OUT/conds.tar.gz" align/cond_*.pt sft_completions.json) || true
    ls -la "$OUT"
    exit "$rc" ;;
  *) echo "unknown step $1" >&2; exit 2 ;;
esac
