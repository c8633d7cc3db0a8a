#!/usr/bin/env bash
# Fresh-machine setup: a virtual environment in .venv with torch and this project (editable, with test extras).
# NNSIGHT_INOC_NDIF=1 ./setup.sh adds the loopback NDIF server packages (ndif, ray, moto).
# TORCH_SPEC picks the torch build; the default is the CPU wheel that lies on local disk here.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
# NNSIGHT_INOC_NDIF=1: also the loopback NDIF server for the remote-parity test (README "Remote backend").
if [ "${NNSIGHT_INOC_NDIF:-0}" = 1 ]; then
    PYTHON=.venv/bin/python tools/ndif_local/install.sh
fi
echo "setup done: .venv/bin/python cli.py --help"
