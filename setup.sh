#!/usr/bin/env bash
# Fresh-machine setup: a virtual environment in .venv with torch and this project (editable, with test extras).
# TORCH_SPEC picks the torch build; the default is the CPU wheel that lies on local disk here.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
echo "setup done: .venv/bin/python cli.py --help"
