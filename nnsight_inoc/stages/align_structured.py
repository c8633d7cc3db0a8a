"""C1's structured null (issue 22, item 4), computed in the align summary.

The random-sphere null is a low bar: with ~1000 examples in 1536 dimensions a trait-free "lawyer"
prompt passes it. So the inoc - neutral contrast at the reporting layer and ``a_sum`` is also measured
along directions that are not v but are not random either:

(a) the other registered traits' directions (``extract/other_directions.pt``,
    :mod:`nnsight_inoc.stages.other_traits`);
(b) the leading :data:`N_PCS` principal components of the per-example unit gradients -g/|g| under the
    neutral prompt at the same layer and position (centred; the directions along which the gradients of
    this very data vary most);
(c) the trait-free prompts' own shift: the loss-matched pool prompt (``lossmatch``) and any measured
    neutral paraphrase (``neutral_para*``) against neutral, along v, and inoc against each of them.

For each direction u the contrast's change in mean cos(-g, u) comes with a paired bootstrap CI over
examples (one resampling for every direction). The rule that reads it is in
:mod:`nnsight_inoc.report.structured_rules`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnsight_inoc.stats.bootstrap import paired_bootstrap_diff_by_col

N_PCS = 10  # leading principal components of the neutral unit gradients (fixed before any sweep, issue 22)
POSITION = "a_sum"
CONTRAST = ("inoc", "neutral")
LOSSMATCH = "lossmatch"
PARAPHRASE_PREFIX = "neutral_para"


def trait_free_conditions(names: list[str]) -> list[str]:
    """The measured trait-free prompts whose own shift inoc must exceed: lossmatch, then neutral paraphrases."""
    return [n for n in names if n == LOSSMATCH] + sorted(n for n in names if n.startswith(PARAPHRASE_PREFIX))


def leading_pcs(units: np.ndarray, k: int = N_PCS) -> tuple[np.ndarray, np.ndarray]:
    """(k, d) unit principal axes of the rows of ``units`` (centred), largest variance first, and each one's
    share of the total variance; k is capped by the rank available (rows - 1, d)."""
    x = np.asarray(units, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(k, max(x.shape[0] - 1, 0), x.shape[1])
    var = s**2
    return vt[:k], var[:k] / var.sum()


def _entry(d: np.ndarray, lo: np.ndarray, hi: np.ndarray, p: np.ndarray, j: int, **extra: Any) -> dict[str, Any]:
    return {"diff_cos": float(d[j]), "lo": float(lo[j]), "hi": float(hi[j]), "p_boot": float(p[j]), **extra}


def structured_null(conds: dict[str, Any], positions: list[str], layer: int, v: np.ndarray | None,
                    others: dict[str, np.ndarray] | None, nb: int, seed: int) -> dict[str, Any] | None:
    """The ``structured_null`` block; None when inoc or neutral is missing or was measured before units were
    kept. ``v`` (d,) is the study's direction at ``layer`` (only for the cosines between directions, reported);
    ``others`` maps each other trait to its (d,) direction at ``layer`` (None: not measured)."""
    a, b = CONTRAST
    if a not in conds or b not in conds or any("units" not in conds[c] for c in CONTRAST):
        return None
    for c in CONTRAST:
        u = conds[c]["units"]
        if int(u["layer"]) != layer or u["position"] != POSITION:
            return {"error": f"{c}'s unit gradients are at layer {u['layer']}, {u['position']}, not {layer}, {POSITION}"}
    ua, ub = (conds[c]["units"]["neg_unit"].double().numpy() for c in CONTRAST)
    j = positions.index(POSITION)
    pcs, ratio = leading_pcs(ub)
    names = ["v"] + [f"trait:{t}" for t in (others or {})] + [f"pc{i + 1}" for i in range(len(pcs))]
    dirs = np.stack([*((others or {}).values()), *pcs]) if (others or len(pcs)) else np.zeros((0, ua.shape[1]))
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) if len(dirs) else dirs
    cols_a = np.column_stack([conds[a]["cos"][:, layer, j].double().numpy(), ua @ dirs.T])
    cols_b = np.column_stack([conds[b]["cos"][:, layer, j].double().numpy(), ub @ dirs.T])
    d, lo, hi, p = paired_bootstrap_diff_by_col(cols_a, cols_b, nb, rng=seed)

    def with_v(k: int) -> dict[str, Any]:
        return {} if v is None else {"cos_with_v": float(dirs[k] @ v / np.linalg.norm(v))}

    n_other = len(others or {})
    out: dict[str, Any] = {
        "contrast": f"{a}-{b}", "layer": layer, "position": POSITION, "n_examples": int(ua.shape[0]),
        "v": _entry(d, lo, hi, p, 0),
        "other_traits": None if others is None else {names[1 + k][len("trait:"):]: _entry(d, lo, hi, p, 1 + k,
                                                                                         **with_v(k))
                                                      for k in range(n_other)},
        "pcs": {"n": len(pcs), "of": f"{b} unit gradients -g/|g| (centred)",
                "directions": {names[1 + n_other + k]: _entry(d, lo, hi, p, 1 + n_other + k,
                                                              explained_variance=float(ratio[k]),
                                                              **with_v(n_other + k))
                               for k in range(len(pcs))}},
        "trait_free": {},
    }
    for t in trait_free_conditions(list(conds)):
        ct = conds[t]["cos"][:, layer, j].double().numpy()
        x = np.column_stack([ct, conds[a]["cos"][:, layer, j].double().numpy()])
        y = np.column_stack([conds[b]["cos"][:, layer, j].double().numpy(), ct])
        d2, lo2, hi2, p2 = paired_bootstrap_diff_by_col(x, y, nb, rng=seed)
        out["trait_free"][t] = {"shift": _entry(d2, lo2, hi2, p2, 0), f"{a}_minus": _entry(d2, lo2, hi2, p2, 1)}
    return out
