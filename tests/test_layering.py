"""The package's folders are its layers: imports run one way, from the CLI down to ``core``.

Read from the source with ``ast`` (imports inside functions count too), so a deferred import
cannot hide a circle. The floors and what each package is for are in the README's
architecture section; change both together.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "nnsight_inoc"

# Lowest floor first. A module may import from a lower floor and from its own package;
# never from a higher floor or from another package of its own floor.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("core", "configs"),
    ("stats",),
    ("models", "data", "measures"),
    ("trace",),
    ("probes", "report"),
    ("train",),
    ("study",),
    ("stages",),
    ("pipeline",),
    ("cli_errors", "cli_open"),
    ("cli", "__init__"),
)
MAX_LINES = 400


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules imported by one module (absolute or relative, at any depth)."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            # the longest known module prefix: `from nnsight_inoc.core import layout` names core.layout
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _floor(package: str) -> int:
    for i, names in enumerate(FLOORS):
        if package in names:
            return i
    raise AssertionError(f"package {package!r} has no floor in FLOORS; add it (and to the README)")


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def test_every_package_has_a_floor() -> None:
    for m in _modules():
        _floor(_package(m))


def test_no_import_circle() -> None:
    graph = _graph()
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import circle: {' -> '.join(err.args[1])}")


def test_imports_only_go_down() -> None:
    bad = []
    for mod, deps in _graph().items():
        here = _package(mod)
        for d in deps:
            there = _package(d)
            if d == "nnsight_inoc" and mod != "nnsight_inoc":
                bad.append(f"{mod} imports the front door nnsight_inoc (only users may)")
            elif there != here and _floor(there) >= _floor(here):
                bad.append(f"{mod} (floor {_floor(here)}) imports {d} (floor {_floor(there)})")
    assert not bad, "\n".join(sorted(bad))


def test_no_module_over_the_line_limit() -> None:
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_checker_sees_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The checks above can fail: a deferred import inside a function still counts."""
    pkg = tmp_path / "nnsight_inoc"
    (pkg / "core").mkdir(parents=True)
    (pkg / "stages").mkdir()
    for d in (pkg, pkg / "core", pkg / "stages"):
        (d / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("def f():\n    from nnsight_inoc.stages import b\n")
    (pkg / "stages" / "b.py").write_text("from nnsight_inoc.core import a\n")
    mods = {_module_name_at(tmp_path, p): p for p in pkg.rglob("*.py")}
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    assert "nnsight_inoc.stages.b" in graph["nnsight_inoc.core.a"]
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())


def _module_name_at(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
