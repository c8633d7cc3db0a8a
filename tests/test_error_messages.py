"""No error message advises a destructive step (issue 18 A4).

"saved directions were extracted from a different model; rerun extract" was shown when the user had only
forgotten --config: following it would have replaced good results with ones from the wrong model. Every message
raised in the code is read from the source; none may tell the user to delete, remove, overwrite or rerun.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests._paths import ROOT

DESTRUCTIVE = re.compile(r"\b(delete|remove|erase|wipe|overwrite|rm\s+-|re-?run|start over)\b", re.IGNORECASE)
SOURCES = [*sorted((ROOT / "nnsight_inoc").rglob("*.py")), ROOT / "cli.py", *sorted((ROOT / "gpu").glob("*.py")),
           *sorted((ROOT / "experiments").glob("*.py")), *sorted((ROOT / "perf").glob("*.py"))]
MESSAGE_CALLS = {"CliError", "ClickException", "UsageError", "BadParameter"}


def _text(node: ast.AST) -> str:
    """The literal text of a message expression (f-string parts included, placeholders dropped)."""
    return " ".join(n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))


def messages(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            out.append((node.lineno, _text(node.exc)))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in MESSAGE_CALLS:
            out.append((node.lineno, _text(node)))
    return out


def test_no_message_advises_a_destructive_step():
    bad = [f"{p.relative_to(ROOT)}:{line}: {text!r}" for p in SOURCES for line, text in messages(p)
           if DESTRUCTIVE.search(text)]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_one():
    src = 'raise ValueError(f"saved directions come from {x}; rerun `extract`")\n'
    p = ROOT / "tests" / "__init__.py"  # any file: only its text is parsed below
    assert DESTRUCTIVE.search(_text(ast.parse(src).body[0].exc)) and p.is_file()


def test_the_direction_mismatch_message_points_at_the_config():
    from types import SimpleNamespace

    import pytest

    from nnsight_inoc import study as S

    blob = {"model_sha256": "a" * 64, "model_name": "qwen2.5-coder-1.5b-instruct", "splits_sha256": "s", "v": None}
    fake = SimpleNamespace(layout=SimpleNamespace(directions=Path("run/extract/directions.pt")),
                           loaded=SimpleNamespace(sha256="b" * 64, name="smollm2-135m-instruct"))
    orig = S.A.load_torch
    S.A.load_torch = lambda path: blob
    try:
        with pytest.raises(ValueError) as err:
            S.load_directions(fake)
    finally:
        S.A.load_torch = orig
    msg = str(err.value)
    assert "qwen2.5-coder-1.5b-instruct" in msg and "smollm2-135m-instruct" in msg and "--config" in msg
    assert not DESTRUCTIVE.search(msg)
