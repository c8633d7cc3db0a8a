"""The packages every command needs, checked before any of them is imported (standard library only).

Why: ``python cli.py`` with a Python outside the project's ``.venv`` used to end in a
ModuleNotFoundError traceback from deep in an import chain. :func:`exit_if_missing` prints one line
naming the missing packages and the setup command, and exits 2 (a usage error: the wrong Python).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable

# import name -> the pyproject.toml dependency it comes from
REQUIRED = {
    "click": "click", "rich": "rich", "pydantic": "pydantic", "numpy": "numpy", "scipy": "scipy",
    "sklearn": "scikit-learn", "torch": "torch", "transformers": "transformers", "peft": "peft",
    "nnsight": "nnsight", "matplotlib": "matplotlib", "gguf": "gguf", "safetensors": "safetensors",
    "yaml": "pyyaml", "py3langid": "py3langid", "vaderSentiment": "vadersentiment",
}
SETUP = "./setup.sh"


def missing(names: Iterable[str] = REQUIRED) -> list[str]:
    """The import names in ``names`` this Python cannot find (nothing is imported)."""
    out = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def missing_message(absent: list[str]) -> str:
    pkgs = ", ".join(REQUIRED.get(n, n) for n in absent)
    return (f"nnsight_inoc: this Python ({sys.executable}) lacks required package(s): {pkgs}; run {SETUP} in the "
            "repository, then use .venv/bin/python cli.py ...")


def exit_if_missing(names: Iterable[str] = REQUIRED) -> None:
    """One line on stderr and exit code 2 when a required package is missing; nothing otherwise."""
    absent = missing(names)
    if absent:
        print(missing_message(absent), file=sys.stderr)
        raise SystemExit(2)
