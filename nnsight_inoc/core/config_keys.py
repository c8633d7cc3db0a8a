"""The nearest valid config key for a misspelt one ("did you mean 'finetune.steps'?").

A typo in a config file (``finetune.stpes``) or a key in the wrong section (``steps`` at the top)
is refused by pydantic as an unknown key; this names the key the user most likely meant, found with
:mod:`difflib` among the keys of the same section, then among every key's last part.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

CUTOFF = 0.6  # difflib's similarity ratio below which no key is suggested


def _submodel(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of ``model`` (sections and their keys)."""
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        sub = _submodel(field.annotation)
        if sub is not None:
            out += all_keys(sub, f"{prefix}{name}.")
    return out


def section_keys(model: type[BaseModel], loc: Sequence[str]) -> list[str] | None:
    """The keys of the section ``loc`` names (``[]`` = the top level); None when ``loc`` is no section."""
    for part in loc:
        field = model.model_fields.get(part)
        sub = _submodel(field.annotation) if field is not None else None
        if sub is None:
            return None
        model = sub
    return list(model.model_fields)


def nearest_key(model: type[BaseModel], loc: Sequence[Any]) -> str | None:
    """The dotted key nearest to the unknown key at ``loc``: first in its own section, then any key whose last
    part is near its last part (a key put in the wrong section); None when nothing is near enough."""
    loc = [str(p) for p in loc]
    if not loc:
        return None
    section, leaf = loc[:-1], loc[-1]
    same = section_keys(model, section) or []
    near = difflib.get_close_matches(leaf, same, n=1, cutoff=CUTOFF)
    if near:
        return ".".join([*section, near[0]])
    keys = [k for k in all_keys(model) if k != ".".join(loc)]
    by_leaf = {k: k.rsplit(".", 1)[-1] for k in keys}
    near = difflib.get_close_matches(leaf, list(by_leaf.values()), n=1, cutoff=CUTOFF)
    return next((k for k, v in by_leaf.items() if near and v == near[0]), None)
