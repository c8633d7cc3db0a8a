#!/usr/bin/env bash
# Install what the loopback NDIF server needs into the given python's environment.
# ndif 0.1.2 declares Python >= 3.12 but installs and runs on 3.11, hence
# --ignore-requires-python (pip cannot express that in a pyproject extra).
# Redis and iproute2 are system packages (Debian: apt-get install redis-server iproute2).
set -euo pipefail
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install -q --ignore-requires-python "ndif[api,ray]==0.1.2" "moto[server]>=5"
command -v redis-server >/dev/null || echo "install.sh: also install redis-server (apt-get install redis-server)" >&2
