"""Regression and residualisation: the one least-squares home of the package.

* :func:`residualise` (the part of y that covariates do not explain) serves both the
  alignment regression control and the drift relation's partial correlations.
* The regression control asks "does the inoculation prompt change gradient alignment
  beyond what the loss (or gradient norm) change explains?". The inoculation prompt lowers the loss of trait-consistent completions, and smaller
  loss alone can change gradient geometry. `condition_effect_regression` therefore
  adjusts the condition effect for loss-like covariates. Because every example is
  seen under every condition, uncertainty comes from a *cluster* bootstrap over
  example ids (all rows of a drawn example travel together), implemented as a
  weighted least-squares fit (duplicated rows == integer weights) so all draws are
  solved in a few batched matrix operations.
* :func:`example_level_effect` is the primary control C (issue 16): each example's change in
  alignment regressed on its own change in loss (condition - neutral, same example), one
  intercept per condition, read at zero loss change. `condition_effect_regression` stays for
  the published runs' summaries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps
from sklearn.linear_model import LinearRegression

from nnsight_inoc.stats.bootstrap import (
    RngLike,
    bootstrap_p_two_sided,
    percentile_interval,
    require_finite,
    resample_count_chunks,
)

# Batched normal equations whose condition number exceeds this are "degenerate"
# resamples (e.g. a covariate constant within the draw): excluded and counted.
_MAX_COND = 1e12


def residualise(
    y: np.ndarray, X: np.ndarray, sample_weight: np.ndarray | None = None
) -> np.ndarray:
    """y minus its OLS fit (with intercept) on X: the part of y that X does not
    explain. X may be (n,), (n, p) or (n, 0) (then y is only centred).

    Solved with numpy's least squares on the (weighted-)centred data, which is what
    scikit-learn's ``LinearRegression`` does (tested equal); calling scikit-learn here cost
    about 0.4 ms per call, and the cluster bootstraps of the drift relation call it thousands
    of times."""
    ya = np.asarray(y, dtype=np.float64)
    Xa = np.asarray(X, dtype=np.float64)
    if Xa.ndim == 1:
        Xa = Xa[:, None]
    if ya.ndim != 1 or Xa.ndim != 2 or Xa.shape[0] != ya.size:
        raise ValueError(f"need y (n,) and X (n, p), got {ya.shape} and {Xa.shape}")
    if ya.size < 2:
        raise ValueError("residualise needs at least 2 rows")
    require_finite(ya, "y")
    require_finite(Xa, "X")
    w = np.ones(ya.size) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    yc = ya - np.average(ya, weights=w)
    if Xa.shape[1] == 0:
        return yc
    Xc = Xa - np.average(Xa, axis=0, weights=w)
    sw = np.sqrt(w)
    beta = np.linalg.lstsq(Xc * sw[:, None], yc * sw, rcond=None)[0]
    return yc - Xc @ beta


def weighted_ols_batch(X: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(k, p) weighted-LS coefficients, one fit per row of W (k, N); X (N, p) must
    include any intercept column. Degenerate fits (cond > 1e12) are NaN rows."""
    p = X.shape[1]
    outer = (X[:, :, None] * X[:, None, :]).reshape(X.shape[0], p * p)
    xtwx = (W @ outer).reshape(W.shape[0], p, p)
    xtwy = W @ (X * y[:, None])
    ok = np.linalg.cond(xtwx) < _MAX_COND
    beta = np.full((W.shape[0], p), np.nan)
    if ok.any():
        beta[ok] = np.linalg.solve(xtwx[ok], xtwy[ok][..., None])[..., 0]
    return beta


def weighted_partial_r_batch(
    y: np.ndarray, z: np.ndarray, C1: np.ndarray, W: np.ndarray
) -> np.ndarray:
    """(k,) weighted Pearson r of y and z after residualising both on C1 (N, q, with
    intercept column), one per weight row; equals the unweighted statistic on the
    rows duplicated by their integer weights."""
    ry = y[None, :] - weighted_ols_batch(C1, y, W) @ C1.T
    rz = z[None, :] - weighted_ols_batch(C1, z, W) @ C1.T
    num = np.sum(W * ry * rz, axis=1)
    den = np.sqrt(np.sum(W * ry * ry, axis=1) * np.sum(W * rz * rz, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _standardise(covariates: dict[str, Any], keep: np.ndarray, n: int) -> np.ndarray:
    cols = []
    for name, values in covariates.items():
        c = np.asarray(values, dtype=np.float64)
        if c.shape != (n,):
            raise ValueError(f"covariate {name!r} has shape {c.shape}, expected ({n},)")
        c = c[keep]
        require_finite(c, f"covariate {name!r}")
        sd = c.std()
        if sd == 0:
            raise ValueError(f"covariate {name!r} is constant; it cannot be a control")
        cols.append((c - c.mean()) / sd)
    return np.column_stack(cols) if cols else np.empty((int(keep.sum()), 0))


def _nan_rows(y: np.ndarray, covariates: dict[str, Any]) -> np.ndarray:
    bad = np.isnan(y)
    for name, values in covariates.items():
        c = np.asarray(values, dtype=np.float64)
        if c.shape != y.shape:
            raise ValueError(f"covariate {name!r} has shape {c.shape}, expected {y.shape}")
        bad |= np.isnan(c)
    return bad


def condition_effect_regression(
    alignment: np.ndarray,
    condition: np.ndarray,
    example_id: np.ndarray,
    covariates: dict[str, np.ndarray],
    baseline: str = "neutral",
    target: str = "inoc",
    n_boot: int = 2000,
    rng: RngLike = 0,
    alpha: float = 0.05,
) -> dict[str, float | int]:
    """Effect of condition ``target`` (vs ``baseline``) on alignment, adjusted for
    standardised covariates, with cluster-bootstrap CIs over ``example_id``.

    Model: alignment ~ 1 + one-hot(condition, baseline dropped) + z(covariates),
    fitted on all rows (all conditions). Rows with NaN in alignment or a covariate
    are dropped and counted; inf raises.

    Returned keys (floats unless noted):
      coef_adjusted, coef_adjusted_lo, coef_adjusted_hi, coef_adjusted_p_boot:
          target coefficient with covariates, percentile CI, two-sided bootstrap p.
      coef_unadjusted, coef_unadjusted_lo, coef_unadjusted_hi:
          same without covariates (= mean(target) - mean(baseline)).
      partial_r, partial_r_lo, partial_r_hi: Pearson r between alignment and the
          target-vs-baseline indicator, both residualised on the covariates, on the
          rows of those two conditions only.
      r2_adjusted, r2_unadjusted: in-sample R^2 of the two models.
      coef_cov_<name>: covariate coefficient per 1 SD of that covariate.
      n_rows, n_examples, n_dropped_nan, n_boot, n_boot_degenerate (ints): rows used,
          clusters, NaN rows dropped, draws, draws excluded as degenerate; alpha.
    """
    if baseline == target:
        raise ValueError("baseline and target must differ")
    y = np.asarray(alignment, dtype=np.float64)
    cond = np.asarray(condition)
    ids = np.asarray(example_id)
    n = y.size
    if y.ndim != 1 or cond.shape != (n,) or ids.shape != (n,):
        raise ValueError(f"alignment, condition, example_id must be 1-D of equal length, "
                         f"got {y.shape}, {cond.shape}, {ids.shape}")
    keep = ~_nan_rows(y, covariates)
    Cz = _standardise(covariates, keep, n)
    y, cond, ids = y[keep], cond[keep], ids[keep]
    require_finite(y, "alignment")
    for label in (baseline, target):
        if not np.any(cond == label):
            raise ValueError(f"condition {label!r} has no (non-NaN) rows")
    levels = [c for c in np.unique(cond).tolist() if c != baseline]
    D = (cond[:, None] == np.asarray(levels)[None, :]).astype(np.float64)
    t = levels.index(target)

    adj = LinearRegression().fit(np.hstack([D, Cz]), y)
    unadj = LinearRegression().fit(D, y)
    pair = (cond == baseline) | (cond == target)
    ind = (cond[pair] == target).astype(np.float64)
    ry, rz = residualise(y[pair], Cz[pair]), residualise(ind, Cz[pair])
    if np.ptp(rz) == 0:
        raise ValueError("covariates perfectly predict the condition; partial r undefined")
    partial = float(sps.pearsonr(ry, rz).statistic)

    boots = _cluster_bootstrap(y, D, Cz, pair, ind, ids, t, n_boot, rng)
    ok = np.isfinite(boots).all(axis=1)
    if ok.sum() < 2:
        raise ValueError("fewer than 2 non-degenerate bootstrap draws")
    lo, hi = percentile_interval(boots[ok], alpha)
    out: dict[str, float | int] = {
        "coef_adjusted": float(adj.coef_[t]),
        "coef_adjusted_lo": float(lo[0]), "coef_adjusted_hi": float(hi[0]),
        "coef_adjusted_p_boot": float(bootstrap_p_two_sided(boots[ok, 0])),
        "coef_unadjusted": float(unadj.coef_[t]),
        "coef_unadjusted_lo": float(lo[1]), "coef_unadjusted_hi": float(hi[1]),
        "partial_r": partial, "partial_r_lo": float(lo[2]), "partial_r_hi": float(hi[2]),
        "r2_adjusted": float(adj.score(np.hstack([D, Cz]), y)),
        "r2_unadjusted": float(unadj.score(D, y)),
    }
    for j, name in enumerate(covariates):
        out[f"coef_cov_{name}"] = float(adj.coef_[len(levels) + j])
    out.update(n_rows=int(y.size), n_examples=int(np.unique(ids).size),
               n_dropped_nan=int((~keep).sum()), n_boot=int(n_boot),
               n_boot_degenerate=int((~ok).sum()), alpha=float(alpha))
    return out


def _cluster_bootstrap(
    y: np.ndarray, D: np.ndarray, Cz: np.ndarray, pair: np.ndarray, ind: np.ndarray,
    ids: np.ndarray, t: int, n_boot: int, rng: RngLike,
) -> np.ndarray:
    """(n_boot, 3) draws of [coef_adjusted, coef_unadjusted, partial_r], resampling
    example ids with replacement (row weight = times its example was drawn)."""
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    _, cluster = np.unique(ids, return_inverse=True)
    n_clusters = int(cluster.max()) + 1
    if n_clusters < 2:
        raise ValueError("cluster bootstrap needs at least 2 distinct example ids")
    ones = np.ones((y.size, 1))
    X_adj, X_unadj = np.hstack([ones, D, Cz]), np.hstack([ones, D])
    C1 = np.hstack([ones[pair], Cz[pair]])
    out = np.empty((n_boot, 3))
    i = 0
    for counts in resample_count_chunks(n_clusters, n_boot, rng):
        W = counts[:, cluster]
        k = W.shape[0]
        out[i:i + k, 0] = weighted_ols_batch(X_adj, y, W)[:, 1 + t]
        out[i:i + k, 1] = weighted_ols_batch(X_unadj, y, W)[:, 1 + t]
        out[i:i + k, 2] = weighted_partial_r_batch(y[pair], ind, C1, W[:, pair])
        i += k
    return out


# ------------------------------------------------- control C, per example
def _cell_sums(y: np.ndarray, Z: np.ndarray, cluster: np.ndarray, codes: np.ndarray, n_clusters: int,
               n_levels: int) -> np.ndarray:
    """Sufficient statistics per (example, condition) cell: [1, z_j, y, z_j z_k, z_j y] summed over its rows,
    shape (n_clusters, C, q). A bootstrap draw's weighted sums are then one contraction with the counts."""
    p = Z.shape[1]
    iu = np.triu_indices(p)
    feats = np.hstack([np.ones((y.size, 1)), Z, y[:, None], (Z[:, :, None] * Z[:, None, :])[:, iu[0], iu[1]],
                       Z * y[:, None]])
    out = np.zeros((n_clusters, n_levels, feats.shape[1]))
    np.add.at(out, (cluster, codes), feats)
    return out


def _within_fit(S: np.ndarray) -> np.ndarray:
    """(k, C + p) OLS coefficients [a_1..a_C, slopes] of y ~ 0 + condition + Z from weighted sums S (k, C, q)
    laid out as in :func:`_cell_sums`: the slopes from the within-condition (centred) moments pooled over
    conditions (Frisch-Waugh-Lovell), then a_c = mean_c(y) - mean_c(Z) . slopes. NaN rows where degenerate."""
    C, q = S.shape[1], S.shape[2]
    p = next(pp for pp in range(1, 8) if 2 + pp + pp * (pp + 1) // 2 + pp == q)
    n, sz, sy = S[..., 0], S[..., 1:1 + p], S[..., 1 + p]
    zz_flat = S[..., 2 + p:2 + p + p * (p + 1) // 2]
    zy = S[..., 2 + p + p * (p + 1) // 2:]
    iu = np.triu_indices(p)
    zz = np.zeros(S.shape[:2] + (p, p))
    zz[..., iu[0], iu[1]] = zz_flat
    zz[..., iu[1], iu[0]] = zz_flat
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_n = np.where(n > 0, 1.0 / n, 0.0)
        czz = (zz - sz[..., :, None] * sz[..., None, :] * inv_n[..., None, None]).sum(axis=1)  # (k, p, p)
        czy = (zy - sz * (sy * inv_n)[..., None]).sum(axis=1)  # (k, p)
        out = np.full((S.shape[0], C + p), np.nan)
        ok = (np.linalg.cond(czz) < _MAX_COND) & (n > 0).all(axis=1)
        if ok.any():
            slopes = np.linalg.solve(czz[ok], czy[ok][..., None])[..., 0]
            means_z = sz[ok] * inv_n[ok][..., None]
            out[ok, :C] = sy[ok] * inv_n[ok] - np.einsum("kcp,kp->kc", means_z, slopes)
            out[ok, C:] = slopes
    return out


def example_level_effect(
    dcos: np.ndarray,
    dloss: np.ndarray,
    condition: np.ndarray,
    example_id: np.ndarray,
    *,
    mediator: np.ndarray | None = None,
    n_boot: int = 2000,
    rng: RngLike = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Control C at the example level: each condition's change in alignment at zero change in loss.

    Model (OLS, no global intercept): ``dcos_ic = a_c + b * dloss_ic [+ m * z(mediator_ic)] + e_ic``,
    where dcos and dloss are condition c minus neutral *for the same example i* (cos(-g, v) and
    nats). ``a_c`` is condition c's effect on the gradient's angle for an example whose loss the
    prompt left unchanged; ``b`` (cos per nat) is one slope shared by the conditions and fitted on
    within-example changes only, so differences in loss *between* examples cannot set it (the old
    regression's slope came from those). The mediator (e.g. the change in log |g|, scaled to unit SD
    but not centred, so a_c is still read at no change) lies on the hypothesised path from prompt to
    angle, so a model with it answers another question; report it as secondary. CIs: percentile cluster bootstrap over examples (all conditions of a drawn example
    travel together), as weighted least squares.

    Inputs are (N,) over rows (example x non-neutral condition). Rows with NaN are dropped and
    counted; inf raises. Returns intercept {c: {est, lo, hi, p_boot}}, slope {est, lo, hi}, mediator
    (same, or None), mean_dcos / mean_dloss / r_dcos_dloss per condition (r None when a side is
    constant), n_rows, n_examples, n_dropped_nan, n_boot, n_boot_degenerate, alpha, model.
    Raises with fewer than 2 examples or a constant dloss (no slope to fit).
    """
    y = np.asarray(dcos, dtype=np.float64)
    x = np.asarray(dloss, dtype=np.float64)
    cond, ids = np.asarray(condition), np.asarray(example_id)
    n = y.size
    if y.ndim != 1 or x.shape != (n,) or cond.shape != (n,) or ids.shape != (n,):
        raise ValueError(f"dcos, dloss, condition, example_id must be 1-D of equal length, got "
                         f"{y.shape}, {x.shape}, {cond.shape}, {ids.shape}")
    covs = {"dloss": x} | ({} if mediator is None else {"mediator": np.asarray(mediator, dtype=np.float64)})
    keep = ~_nan_rows(y, covs)
    y, x, cond, ids = y[keep], x[keep], cond[keep], ids[keep]
    require_finite(y, "dcos")
    require_finite(x, "dloss")
    if np.ptp(x) == 0:
        raise ValueError("dloss is constant: no slope to fit")
    levels = list(dict.fromkeys(cond.tolist()))
    D = (cond[:, None] == np.asarray(levels)[None, :]).astype(np.float64)
    cols = [D, x[:, None]]
    if mediator is not None:  # scaled to 1 SD but not centred: zero stays "no change", where a_c is read
        med = covs["mediator"][keep]
        require_finite(med, "mediator")
        if med.std() == 0:
            raise ValueError("the mediator is constant; it cannot be a covariate")
        cols.append((med / med.std())[:, None])
    Z = np.hstack(cols[1:])  # the slopes' columns: dloss (and the mediator)
    _, cluster = np.unique(ids, return_inverse=True)
    n_clusters = int(cluster.max()) + 1
    if n_clusters < 2:
        raise ValueError("the example-level bootstrap needs at least 2 distinct example ids")
    codes = D.argmax(axis=1)
    stats = _cell_sums(y, Z, cluster, codes, n_clusters, len(levels))  # (n_clusters, C, q)
    beta = _within_fit(stats.sum(axis=0)[None])[0]
    boots = np.empty((n_boot, beta.size))
    i = 0
    for counts in resample_count_chunks(n_clusters, n_boot, rng):
        k = counts.shape[0]
        boots[i:i + k] = _within_fit(np.einsum("be,ecq->bcq", counts, stats))
        i += k
    ok = np.isfinite(boots).all(axis=1)
    if ok.sum() < 2:
        raise ValueError("fewer than 2 non-degenerate bootstrap draws")
    lo, hi = percentile_interval(boots[ok], alpha)
    p = bootstrap_p_two_sided(boots[ok])

    def coef(j: int, with_p: bool = True) -> dict[str, float]:
        out = {"est": float(beta[j]), "lo": float(lo[j]), "hi": float(hi[j])}
        return out | ({"p_boot": float(p[j])} if with_p else {})

    c = len(levels)
    r_by: dict[str, float | None] = {}
    for j, lev in enumerate(levels):
        sel = D[:, j] > 0
        ok_r = sel.sum() >= 3 and np.ptp(y[sel]) > 0 and np.ptp(x[sel]) > 0
        r_by[lev] = float(np.corrcoef(x[sel], y[sel])[0, 1]) if ok_r else None
    return {
        "model": "dcos ~ 0 + condition + dloss" + ("" if mediator is None else " + mediator / sd(mediator)"),
        "intercept": {lev: coef(j) for j, lev in enumerate(levels)},
        "slope": coef(c),
        "mediator": None if mediator is None else coef(c + 1),
        "mean_dcos": {lev: float(y[D[:, j] > 0].mean()) for j, lev in enumerate(levels)},
        "mean_dloss": {lev: float(x[D[:, j] > 0].mean()) for j, lev in enumerate(levels)},
        "r_dcos_dloss": r_by,
        "n_rows": int(y.size), "n_examples": n_clusters, "n_dropped_nan": int((~keep).sum()),
        "n_boot": int(n_boot), "n_boot_degenerate": int((~ok).sum()), "alpha": float(alpha),
    }
