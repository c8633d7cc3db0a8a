"""TOML text from nested dicts (the standard library's tomllib only reads TOML).

Enough for configs: tables of scalars, strings, booleans and lists, nested one table per
dotted prefix. Round trip (``tomllib.loads(to_toml(d)) == d``) is tested with the configs.
"""

from __future__ import annotations

from typing import Any


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """TOML text for ``data``: its scalars first, then one ``[table]`` per nested dict."""
    return _to_toml(data, prefix)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _to_toml(data: dict[str, Any], prefix: str = "") -> str:
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    out = []
    if prefix and scalars:
        out.append(f"[{prefix}]")
    for k, v in scalars:
        out.append(f"{_quote_key(k)} = {_toml_value(v)}")
    for k, v in tables:
        sub = f"{prefix}.{_quote_key(k)}" if prefix else _quote_key(k)
        if v and all(not isinstance(x, dict) for x in v.values()):
            out.append("")
            out.append(f"[{sub}]")
            out.extend(f"{_quote_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items())
        else:
            out.append("")
            out.append(_to_toml(v, sub))
    return "\n".join(out).strip() + "\n"


def _quote_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)
