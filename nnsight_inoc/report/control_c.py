"""Control C at the example level (issue 16 item 5): each example's change in alignment against its own change in loss.

The primary model (:func:`~nnsight_inoc.stats.regression.example_level_effect`) regresses, per layer and
position, dcos = cos(-g, v) under condition c minus under neutral *for the same example* on that
example's dloss (same difference, nats), with one intercept per condition, and reads condition c's effect
at dloss = 0 with a cluster bootstrap over examples. The secondary model adds the change in log |g|;
the gradient norm lies on the hypothesised path from prompt to angle (a mediator), so it is labelled as
such and never decides a verdict.

The align stage writes this into its summary (``example_regression``) for every layer; for published runs
whose summary predates it, :func:`example_regression` computes it at the reporting layer from
``align/rows.csv.gz`` (one row per example x condition x layer x position, with cos, grad_norm and loss).
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.stats.regression import example_level_effect

NEUTRAL = "neutral"
POSITIONS = ("a_sum", "final_prompt")
MODEL_NOTE = ("primary: dcos ~ 0 + condition + dloss (condition - neutral, same example; the intercept is the "
              "condition's effect at no change in loss); secondary (mediator, never decides): + change in log |g|; "
              "CIs: cluster bootstrap over examples")


def example_level_at(cos: Mapping[str, np.ndarray], loss: Mapping[str, np.ndarray], norm: Mapping[str, np.ndarray],
                     n_boot: int, seed: int) -> dict[str, Any]:
    """Both models at one layer and position. Each mapping: condition -> (n,) per example, every condition in
    the same example order, neutral included. Returns {"primary": ..., "mediator": ...} (or {error} each)."""
    if NEUTRAL not in cos:
        raise ValueError("the example-level control needs the neutral condition")
    others = [c for c in cos if c != NEUTRAL]
    if not others:
        raise ValueError("the example-level control needs a condition besides neutral")
    n = cos[NEUTRAL].shape[0]
    dcos = np.concatenate([cos[c] - cos[NEUTRAL] for c in others])
    dloss = np.concatenate([loss[c] - loss[NEUTRAL] for c in others])
    with np.errstate(divide="ignore"):
        dlog = np.concatenate([np.log(norm[c]) - np.log(norm[NEUTRAL]) for c in others])
    cond = np.repeat(others, n)
    ids = np.tile(np.arange(n), len(others))
    out: dict[str, Any] = {}
    for key, med in (("primary", None), ("mediator", dlog)):
        try:
            out[key] = example_level_effect(dcos, dloss, cond, ids, mediator=med, n_boot=n_boot, rng=seed)
        except ValueError as err:
            out[key] = {"error": str(err)}
    return out


def _read_rows(layout: RunLayout, layer: int, positions: Sequence[str]) -> dict[str, dict[str, dict[str, list]]]:
    """position -> condition -> {"ids", "cos", "loss", "norm"} lists at one layer, from align/rows.csv.gz."""
    path = layout.align_rows
    if not path.is_file():
        raise FileNotFoundError(f"missing artifact {path}; run `align --condition all` first")
    want, lay = set(positions), str(layer)
    out: dict[str, dict[str, dict[str, list]]] = {p: {} for p in positions}
    with gzip.open(path, "rt", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["layer"] != lay or r["position"] not in want:
                continue
            d = out[r["position"]].setdefault(r["condition"], {"ids": [], "cos": [], "loss": [], "norm": []})
            d["ids"].append(r["example_id"])
            d["cos"].append(float(r["cos_neg_g_v"]))
            d["loss"].append(float(r["loss"]))
            d["norm"].append(float(r["grad_norm"]))
    return out


def from_rows_table(layout: RunLayout, layer: int, n_boot: int, seed: int,
                    positions: Sequence[str] = POSITIONS) -> dict[str, Any]:
    """The ``example_regression`` block at one layer, computed from align/rows.csv.gz (6 significant digits,
    as written). ValueError when the conditions list different examples."""
    table = _read_rows(layout, layer, positions)
    by_position: dict[str, dict[str, Any]] = {}
    for pos, conds in table.items():
        ids = next(iter(conds.values()))["ids"] if conds else []
        if any(c["ids"] != ids for c in conds.values()):
            raise ValueError(f"{layout.align_rows}: conditions list different examples at layer {layer}, {pos}")
        arrays = {k: {c: np.asarray(v[k]) for c, v in conds.items()} for k in ("cos", "loss", "norm")}
        by_position[pos] = {str(layer): example_level_at(arrays["cos"], arrays["loss"], arrays["norm"], n_boot,
                                                         seed + layer)}
    return {"note": MODEL_NOTE, "by_position": by_position,
            "source": "computed by the report from align/rows.csv.gz (the summary predates it)"}


def example_regression(run_dir: Any, align: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The align summary's ``example_regression``, or (older runs) :func:`from_rows_table` at its layer."""
    block = align.get("example_regression")
    if block is not None:
        return {**block, "source": "align summary"}
    n_boot = int(config.get("align", {}).get("n_bootstrap", 2000))
    return from_rows_table(RunLayout(run_dir), int(align["layer"]), n_boot, int(config.get("seed", 0)))


def at_layer(block: Mapping[str, Any], position: str, layer: int) -> Mapping[str, Any] | None:
    """The {primary, mediator} pair at one position and layer, or None when not computed there."""
    return block.get("by_position", {}).get(position, {}).get(str(layer))
