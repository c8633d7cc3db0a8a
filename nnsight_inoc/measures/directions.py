"""Trait directions v(l) and the checks that say whether they mean anything.

A direction is only worth measuring gradients against if it (1) separates the
trait-promoting from the trait-suppressing condition on prompts it was not built
from, and (2) tracks how much of the trait the model then actually expresses.
Both checks are computed per layer and position; a documented rule picks the
reporting layer but every layer stays in the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nnsight_inoc.stats.correlation import pearson_spearman
from nnsight_inoc.stats.separation import auroc, cohens_d

POSITIONS = ("final_prompt", "first_assistant", "response_mean")


def mean_difference(promote: torch.Tensor, suppress: torch.Tensor) -> torch.Tensor:
    """Unit-normalised mean(promote) - mean(suppress) over examples.

    Inputs are (n, L, P, d); returns (L, P, d) float32. NaN rows (a missing position)
    are an error: silently dropping them would change which prompts define v.
    """
    if promote.shape[0] == 0 or suppress.shape[0] == 0:
        raise ValueError(
            f"both groups need examples (promote n={promote.shape[0]}, suppress n={suppress.shape[0]})"
        )
    if promote.shape[1:] != suppress.shape[1:]:
        raise ValueError(f"shape mismatch: {tuple(promote.shape)} vs {tuple(suppress.shape)}")
    for name, x in (("promote", promote), ("suppress", suppress)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} activations contain NaN/inf")
    diff = promote.double().mean(0) - suppress.double().mean(0)
    norm = diff.norm(dim=-1, keepdim=True)
    if (norm == 0).any():
        raise ValueError("promote and suppress means are identical at some layer/position")
    return (diff / norm).float()


def project(acts: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scalar projection <h, v> of (n, L, P, d) activations onto unit v (L, P, d)."""
    return torch.einsum("nlpd,lpd->nlp", acts.double(), v.double()).float()


@dataclass
class Separation:
    auroc: np.ndarray  # (L, P)
    cohens_d: np.ndarray  # (L, P)


def separation(proj_promote: np.ndarray, proj_suppress: np.ndarray) -> Separation:
    """Per layer/position AUROC and Cohen's d of promote vs suppress projections (n, L, P)."""
    L, P = proj_promote.shape[1:]
    au = np.empty((L, P))
    dd = np.empty((L, P))
    for l in range(L):
        for p in range(P):
            au[l, p] = auroc(proj_promote[:, l, p], proj_suppress[:, l, p])
            dd[l, p] = cohens_d(proj_promote[:, l, p], proj_suppress[:, l, p])
    return Separation(au, dd)


_CORR_KEYS = ("pearson_r", "pearson_p", "pearson_lo", "pearson_hi", "spearman_r", "spearman_p", "spearman_lo",
              "spearman_hi")


def monitoring_correlation(proj: np.ndarray, scores: np.ndarray, n_boot: int = 1000) -> list[dict]:
    """Per-layer Pearson/Spearman r between final-prompt projection (n, L) and trait score (n,).

    An undefined correlation (e.g. every answer scored the same) is reported as NaN with
    the reason, so the layer rule and the report see a failed check, not a crash or a 0.
    """
    out = []
    for l in range(proj.shape[1]):
        try:
            out.append(pearson_spearman(proj[:, l], scores, n_boot=n_boot, rng=l))
        except ValueError as err:
            out.append({**{k: float("nan") for k in _CORR_KEYS}, "n": int(np.isfinite(scores).sum()),
                        "error": str(err)})
    return out


def choose_layer(auroc_by_layer: np.ndarray, r_by_layer: np.ndarray, min_auroc: float = 0.95) -> tuple[int, str]:
    """The reporting layer and the reason, by the documented rule.

    Among layers whose held-out AUROC reaches ``min_auroc``, take the one with the
    largest monitoring Pearson r (separating AND tracking the trait); if none
    reaches it, take the most separating layer and say so.
    """
    ok = np.flatnonzero(auroc_by_layer >= min_auroc)
    if ok.size:
        r = np.where(np.isfinite(r_by_layer[ok]), r_by_layer[ok], -np.inf)
        best = int(ok[int(np.argmax(r))])
        return best, f"largest monitoring r among {ok.size} layers with held-out AUROC >= {min_auroc}"
    best = int(np.argmax(auroc_by_layer))
    return best, f"no layer reached AUROC {min_auroc}; took the most separating layer"
