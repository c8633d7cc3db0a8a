"""Issue 22 in the align summary: alignment read beyond the quoted words, and each leak condition's own shift.

A referee found C2 (inoc - leak_inoc) could not fail where it was read: assistant tokens 1-3 lie inside
the words the content leak quotes, where the quote itself raises the loss and turns the gradient toward v.
The align stage therefore also reads every condition at the same completion tokens after the longest
quote of the factorial (``b1..bk``, ``b_sum``: :data:`nnsight_inoc.stages.align.BEYOND_METHOD`), on the
examples long enough for it, the same examples for every condition. Two blocks:

- ``beyond_leak``: per condition, mean cos(-g, v) at the b positions; every contrast of the summary at
  the b positions with the same statistics as ``contrasts`` (paired bootstrap, exact and Monte-Carlo
  random-direction nulls, Holm across layers); how many examples were excluded, and which.
- ``leak_shift``: each leak condition against its base condition (leak_X - neutral, inoc_leak_X - inoc),
  at the quoted positions (a1..ak, a_sum, all examples) and at the b positions (the examples measured
  there; a_sum on those same examples beside it), paired bootstrap CIs, every layer. The leak's own
  shift is shown, not left inside C2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nnsight_inoc.stats.bootstrap import paired_bootstrap_diff_by_col

ContrastFn = Callable[..., dict[str, list[float]]]


def _beyond_conditions(conds: dict[str, Any]) -> tuple[dict[str, Any], list[str], str | None]:
    """(conditions with a usable ``beyond`` block, those without, the reason the block cannot be built or None)."""
    have = {n: c for n, c in conds.items() if "beyond" in c}
    without = [n for n in conds if n not in have]
    if not have:
        return {}, without, "no condition was measured beyond the quote"
    first = next(iter(have.values()))["beyond"]
    for n, c in have.items():
        b = c["beyond"]
        if b["words"] != first["words"] or b["rows"].tolist() != first["rows"].tolist():
            return {}, without, (f"conditions measured beyond different quotes ({n}: {b['words']} words vs "
                                 f"{first['words']}); measure them together (`align --condition all`)")
    if len(first["rows"]) < 2:
        return {}, without, f"{len(first['rows'])} example(s) have enough tokens beyond {first['words']} words"
    return have, without, None


def _as_cond(c: dict[str, Any]) -> dict[str, Any]:
    """The condition's b block in the shape :func:`position_contrast` reads (cos, norm: (m, L, P))."""
    return {"cos": c["beyond"]["cos"], "norm": c["beyond"]["norm"]}


def beyond_leak(conds: dict[str, Any], pairs: list[tuple[str, str]], dirs: np.ndarray, nb: int, seed: int,
                contrast: ContrastFn, ci_block: Callable[..., dict[str, list[float]]]) -> dict[str, Any] | None:
    """The ``beyond_leak`` block (module docstring); None when no condition was measured beyond a quote.
    ``contrast`` is the summary's per-position contrast, ``ci_block`` its per-condition mean CI."""
    if all("beyond" not in c for c in conds.values()):
        return None
    have, without, error = _beyond_conditions(conds)
    if error:
        return {"error": error, "without": without}
    first = next(iter(have.values()))["beyond"]
    positions = list(first["positions"])
    n_all = len(next(iter(conds.values()))["ids"])
    out: dict[str, Any] = {
        "words": int(first["words"]), "positions": positions, "method": first.get("method", ""),
        "n_examples": len(first["rows"]), "n_excluded": n_all - len(first["rows"]),
        "excluded_ids": list(first["excluded"]), "without": without,
        "conditions": {n: {"cos": {p: ci_block(c["beyond"]["cos"][:, :, j].numpy(), nb, seed)
                               for j, p in enumerate(positions)}} for n, c in have.items()},
        "contrasts": {},
    }
    for a, b in pairs:
        if a not in have or b not in have:
            continue
        D = (have[a]["beyond"]["mean_unit_neg_grad"] - have[b]["beyond"]["mean_unit_neg_grad"]).double().numpy()
        delta_r = D @ dirs.T  # (L, P, K)
        out["contrasts"][f"{a}-{b}"] = {p: contrast(_as_cond(have[a]), _as_cond(have[b]), j, D[:, j], delta_r[:, j],
                                                    nb, seed) for j, p in enumerate(positions)}
    return out


def base_condition(name: str, conds: dict[str, Any], leak: dict[str, Any] | None) -> str | None:
    """The condition a leak condition adds its quote to: from align/leak.json's factorial when given, else the
    measured plain condition whose prompt is the leak's base prompt (neutral preferred, then inoc)."""
    if leak and name in leak.get("conditions", {}):
        base = leak["conditions"][name].get("base_condition")
        return base if base in conds else None
    prompt = conds[name]["system_prompt"]
    plain = [n for n, c in conds.items() if not c.get("leak") and c["system_prompt"] == prompt]
    order = sorted(plain, key=lambda n: (n != "neutral", n != "inoc", n))
    return order[0] if order else None


def _diff(a: np.ndarray, b: np.ndarray, nb: int, seed: int) -> dict[str, list[float]]:
    d, lo, hi, p = paired_bootstrap_diff_by_col(a, b, nb, rng=seed)
    return {"diff_cos": d.tolist(), "lo": lo.tolist(), "hi": hi.tolist(), "p_boot": p.tolist()}


def leak_shift(conds: dict[str, Any], positions: list[str], leak: dict[str, Any] | None, nb: int,
               seed: int) -> dict[str, Any] | None:
    """The ``leak_shift`` block (module docstring); None when no leak condition was measured."""
    leaks = [n for n, c in conds.items() if c.get("leak")]
    if not leaks:
        return None
    have, _, error = _beyond_conditions(conds)
    quoted = [p for p in positions if p != "final_prompt"]
    out: dict[str, Any] = {"note": "shift of each leak condition against its base condition (leak - base), mean "
                                   "cos(-g, v), paired bootstrap over examples, every layer; quoted = the "
                                   "assistant tokens inside the quote (all examples), beyond = after the longest "
                                   "quote (the examples measured there), quoted_same_examples = a_sum on those",
                           "conditions": {}, "beyond_error": error}
    for name in leaks:
        base = base_condition(name, conds, leak)
        if base is None:
            out["conditions"][name] = {"error": "its base condition was not measured"}
            continue
        c, b = conds[name], conds[base]
        rec: dict[str, Any] = {"base": base, "words": c["leak"].get("words"),
                               "quoted": {p: _diff(c["cos"][:, :, positions.index(p)].numpy(),
                                                   b["cos"][:, :, positions.index(p)].numpy(), nb, seed)
                                          for p in quoted}}
        if name in have and base in have:
            bb = c["beyond"]
            rows = bb["rows"].numpy()
            rec["beyond"] = {p: _diff(bb["cos"][:, :, j].numpy(), b["beyond"]["cos"][:, :, j].numpy(), nb, seed)
                             for j, p in enumerate(bb["positions"])}
            j = positions.index("a_sum")
            rec["quoted_same_examples"] = {"a_sum": _diff(c["cos"][rows, :, j].numpy(), b["cos"][rows, :, j].numpy(),
                                                          nb, seed)}
        out["conditions"][name] = rec
    return out
