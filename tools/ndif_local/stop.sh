#!/usr/bin/env bash
# Stop the loopback NDIF stack started by start.sh RUN_DIR: every process by its PID.
#
# First the recorded PIDs (SIGTERM, bounded wait, then SIGKILL), then any process still
# inside the private namespace (Ray's workers, gunicorn's workers), listed by
# `ip netns pids` -- the namespace was created by start.sh, so everything in it is ours.
# Finally the namespace is deleted. Logs are kept.
set -uo pipefail
RUN_DIR="${1:?usage: stop.sh RUN_DIR}"
NS="$(cat "$RUN_DIR/netns" 2>/dev/null || echo "${NDIF_NETNS:-nnsight-inoc-ndif}")"

term_wait() {  # term_wait PID...: SIGTERM, wait up to 10 s, then SIGKILL
    local pids=("$@") t0=$SECONDS
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null
    while (( SECONDS - t0 < 10 )); do
        local alive=()
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
        [ ${#alive[@]} -eq 0 ] && return 0
        sleep 0.3
    done
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && { echo "stop.sh: SIGKILL $p"; kill -KILL "$p" 2>/dev/null; }; done
    return 0
}

recorded=()
for f in api ray s3 redis; do
    [ -f "$RUN_DIR/pids/$f" ] && recorded+=("$(cat "$RUN_DIR/pids/$f")")
done
term_wait "${recorded[@]}"
if ip netns list | grep -qw "$NS"; then
    mapfile -t rest < <(ip netns pids "$NS")
    [ ${#rest[@]} -gt 0 ] && { echo "stop.sh: stopping ${#rest[@]} leftover process(es) in $NS: ${rest[*]}"; term_wait "${rest[@]}"; }
    ip netns del "$NS"
fi
rm -f "$RUN_DIR/pids/"*
echo "NDIF stack stopped (logs kept in $RUN_DIR/logs)"
