#!/usr/bin/env bash
# Start a real NDIF server (ndif==0.1.2) on loopback inside a private network namespace.
#
#   start.sh RUN_DIR      logs in RUN_DIR/logs, PIDs in RUN_DIR/pids, env for clients in RUN_DIR/env
#
# Why a network namespace: Ray binds the machine's outward interface otherwise; inside a
# namespace that only has `lo`, every service (and the client, run with
# `ip netns exec $NDIF_NETNS ...`) can only talk over 127.0.0.1. Needs root (ip netns).
# Every wait is bounded; on any failure the script stops what it started (stop.sh) and exits 1.
#
# Env: PYTHON (default: python3 on PATH; its bin/ must hold ray, gunicorn, moto_server),
#      NDIF_NETNS (default nnsight-inoc-ndif), NDIF_API_PORT (8001), NDIF_START_TIMEOUT_S (120).
set -euo pipefail

RUN_DIR="${1:?usage: start.sh RUN_DIR}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3)}"
BIN="$(dirname "$PYTHON")"
NS="${NDIF_NETNS:-nnsight-inoc-ndif}"
API_PORT="${NDIF_API_PORT:-8001}"
TIMEOUT="${NDIF_START_TIMEOUT_S:-120}"

for tool in ip redis-server; do
    command -v "$tool" >/dev/null || { echo "start.sh: '$tool' not found (apt-get install iproute2 redis-server)" >&2; exit 1; }
done
for tool in ray gunicorn moto_server; do
    [ -x "$BIN/$tool" ] || { echo "start.sh: $BIN/$tool not found (run tools/ndif_local/install.sh)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "start.sh: needs root for 'ip netns' (private loopback-only network)" >&2; exit 1; }

mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
echo "$NS" > "$RUN_DIR/netns"
# Ray's socket paths must stay under 107 bytes, so its temp dir (with Ray's own logs) is
# short and outside RUN_DIR; RUN_DIR/ray_tmp says where.
RAY_TMP="${NDIF_RAY_TEMP_DIR:-$(mktemp -d /tmp/ndif-ray.XXXXXX)}"
echo "$RAY_TMP" > "$RUN_DIR/ray_tmp"

if ip netns list | grep -qw "$NS"; then
    if [ -n "$(ip netns pids "$NS")" ]; then
        echo "start.sh: namespace $NS already has processes ($(ip netns pids "$NS" | tr '\n' ' ')); run stop.sh first" >&2
        exit 1
    fi
else
    ip netns add "$NS"
fi
ip netns exec "$NS" ip link set lo up

# Shared environment of every service (ndif is configured only through env vars).
cat > "$RUN_DIR/env" <<ENV
export PATH="$BIN:\$PATH"
export PYTHONPATH="$ROOT\${PYTHONPATH:+:\$PYTHONPATH}"
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export GRPC_ENABLE_FORK_SUPPORT=0
export RAY_USAGE_STATS_ENABLED=0
export NDIF_REDIS_URL=redis://127.0.0.1:6379
export NDIF_OBJECT_STORE_URL=http://127.0.0.1:5000
export NDIF_OBJECT_STORE_ACCESS_KEY=loopback
export NDIF_OBJECT_STORE_SECRET_KEY=loopback
export NDIF_RAY_ADDRESS=ray://127.0.0.1:10001
export NDIF_API_PORT=$API_PORT
export NDIF_CONTROLLER_IMPORT_PATH=tools.ndif_local.adapt.CompatControllerActor
export NDIF_MODEL_IMPORT_PATH=tools.ndif_local.adapt.CpuModelActor
export NDIF_DEFAULT_DTYPE=float32
export NDIF_HOST=http://127.0.0.1:$API_PORT
ENV
# shellcheck disable=SC1091
source "$RUN_DIR/env"

fail() {
    echo "start.sh: $*; logs in $RUN_DIR/logs; stopping what was started" >&2
    "$HERE/stop.sh" "$RUN_DIR" || true
    exit 1
}

# spawn NAME CMD...: run CMD in the namespace, in its own session, logging to logs/NAME.log.
# `ip netns exec` and `setsid` both exec (no fork), so $! is the service's own PID.
spawn() {
    local name="$1"; shift
    ip netns exec "$NS" setsid "$@" >"$RUN_DIR/logs/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN_DIR/pids/$name"
}

# wait_for WHAT SECONDS CMD...: poll CMD (inside the namespace) until it succeeds, bounded;
# fails at once if the service WHAT (when it has a PID file) has exited.
wait_for() {
    local what="$1" limit="$2"; shift 2
    local t0=$SECONDS pidf
    pidf="$RUN_DIR/pids/$what"
    until ip netns exec "$NS" "$@" >/dev/null 2>&1; do
        (( SECONDS - t0 < limit )) || fail "$what not ready after ${limit}s"
        if [ -f "$pidf" ] && ! kill -0 "$(cat "$pidf")" 2>/dev/null; then fail "$what exited"; fi
        sleep 0.5
    done
    echo "  $what ready ($(( SECONDS - t0 ))s)"
}

port_open() { "$PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1"; }

t_start=$SECONDS
spawn redis redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no --daemonize no
spawn s3 "$BIN/moto_server" -H 127.0.0.1 -p 5000
wait_for redis 20 "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', 6379), 1)"
wait_for s3 30 "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', 5000), 1)"

# Ray head with a fake GPU: the controller only places models on nodes that report "GPU"
# and "cuda_memory_bytes". --block keeps `ray start` in the foreground so its PID owns
# the Ray processes and stopping it stops them.
MEM=$("$PYTHON" -c "import os; print(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))")
spawn ray "$BIN/ray" start --head --block \
    --node-ip-address=127.0.0.1 --port=6385 --ray-client-server-port=10001 \
    --num-cpus=4 --num-gpus=1 \
    --resources="{\"head\": 10, \"cuda_memory_bytes\": 8000000000, \"cpu_memory_bytes\": $MEM}" \
    --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port=8265 \
    --temp-dir="$RAY_TMP"
wait_for ray 90 "$BIN/ray" status --address=127.0.0.1:6385

ip netns exec "$NS" env RAY_ADDRESS=127.0.0.1:6385 "$PYTHON" -m ndif.services.ray.deployments.controller.controller \
    >"$RUN_DIR/logs/controller_launch.log" 2>&1 || fail "controller launch failed"
echo "  controller launched"

spawn api "$BIN/gunicorn" --config python:ndif.services.api.gunicorn_conf ndif.services.api.app:app
wait_for api "$TIMEOUT" "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$API_PORT/ping', timeout=2)"
echo "NDIF stack up in $(( SECONDS - t_start ))s: NDIF_HOST=$NDIF_HOST (namespace $NS; client env: source $RUN_DIR/env)"
