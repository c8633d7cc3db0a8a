"""The align stage's summary: per-condition CIs, paired contrasts, the random-direction null
and the loss controls, written as one JSON, a tidy table and plots.

Every contrast is paired (the same SFT examples under each condition) and every
per-layer family of p-values is corrected (Holm; Benjamini-Hochberg also given).

Issue 16 additions, each present when the conditions carry their inputs: the loss split into
content and trait parts (``content_loss``: the loss of the untraited answer), the content-leak
controls ``leak_<target>`` with their achieved match, per-example system prompts, and control C
at the example level (:mod:`nnsight_inoc.report.control_c`). Today's regression
(``regression``) is kept, over the four conditions it was designed for.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.layout import (
    LOSS_PLOT,
    RunLayout,
    cos_plot,
    norm_plot,
    null_plot,
)
from nnsight_inoc.core.progress import log
from nnsight_inoc.measures.alignment import SIGN_NOTE
from nnsight_inoc.report import plots
from nnsight_inoc.report.control_c import MODEL_NOTE, example_level_at
from nnsight_inoc.report.controls import LEAK_MATCH_TOLERANCE, compact_prompt, leak_target
from nnsight_inoc.report.figures_run import render_run_figures, run_styles
from nnsight_inoc.stages.align_beyond import beyond_leak, leak_shift
from nnsight_inoc.stages.align_structured import structured_null
from nnsight_inoc.stats.bootstrap import (
    bootstrap_col_means,
    bootstrap_mean_ci_by_col,
    paired_bootstrap_diff_by_col,
    percentile_interval,
)
from nnsight_inoc.stats.multiple import benjamini_hochberg, holm
from nnsight_inoc.stats.nulls import (
    null_p_values,
    random_unit_directions,
    sphere_null_p,
)
from nnsight_inoc.stats.regression import condition_effect_regression
from nnsight_inoc.study import Study

# (a, b): report a - b. The first is the hypothesis test; the others are its controls.
CONTRASTS = (("inoc", "neutral"), ("inoc", "lossmatch"), ("lossmatch", "neutral"), ("explicit", "neutral"))
REGRESSION_POSITIONS = ("final_prompt", "a_sum")
LEGACY_CONDITIONS = ("neutral", "inoc", "explicit", "lossmatch")  # what today's regression was designed over
LOSS_PARTS = ("total", "content", "trait")


def contrast_pairs(names: list[str]) -> list[tuple[str, str]]:
    """The paired contrasts to compute: :data:`CONTRASTS` among the measured conditions, then for every
    content-leak control ``leak_<t>``: t - leak_<t> (the loss-matched comparison) and leak_<t> - neutral."""
    pairs = [(a, b) for a, b in CONTRASTS if a in names and b in names]
    for c in names:
        t = leak_target(c)
        if t in names:
            pairs += [p for p in ((t, c), (c, "neutral")) if p[1] in names and p not in pairs]
    return pairs


def load_conditions(layout: RunLayout) -> dict[str, dict[str, Any]]:
    conds = {}
    for path in layout.align_conditions():
        blob = A.load_torch(path)
        conds[blob["condition"]] = blob
    if not conds:
        raise FileNotFoundError(f"no measured conditions in {layout.align_dir}; run `align` first")
    ids = {name: c["ids"] for name, c in conds.items()}
    first = next(iter(ids.values()))
    if any(v != first for v in ids.values()):
        raise ValueError(f"the conditions in {layout.align_dir} were measured on different SFT examples; check that "
                         "every `align` there used the folder's config, or measure them together (`align --condition "
                         "all`) in another --run-dir")
    return conds


def _ci_block(x: np.ndarray, n_boot: int, seed: int) -> dict[str, list[float]]:
    est, lo, hi = bootstrap_mean_ci_by_col(x, n_boot=n_boot, rng=seed)
    return {"mean": est.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def position_contrast(ca: dict[str, Any], cb: dict[str, Any], j: int, D: np.ndarray, delta_r: np.ndarray, nb: int,
                      seed: int) -> dict[str, list[float]]:
    """One contrast a - b at position column ``j`` of ``ca``/``cb``'s cos and norm (n, L, P), every layer: the
    paired bootstrap, the exact and Monte-Carlo random-direction nulls from the mean unit -gradient difference
    ``D`` (L, d) and its projections on the random directions ``delta_r`` (L, K), Holm and BH across layers."""
    diff, lo, hi, pv = paired_bootstrap_diff_by_col(ca["cos"][:, :, j].numpy(), cb["cos"][:, :, j].numpy(), nb, rng=seed)
    dim = D.shape[-1]
    d_norm = np.linalg.norm(D, axis=-1)
    p_exact = sphere_null_p(diff, d_norm, dim)
    p_mc = null_p_values(diff[:, None], delta_r[:, None, :])[:, 0]
    sd = d_norm / np.sqrt(dim)
    return {
        "diff_cos": diff.tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
        "p_boot": pv.tolist(), "p_boot_holm": holm(pv).tolist(), "p_boot_bh": benjamini_hochberg(pv).tolist(),
        "null_p_exact": p_exact.tolist(), "null_p_exact_holm": holm(p_exact).tolist(),
        "null_p_mc": p_mc.tolist(), "null_p_mc_holm": holm(p_mc).tolist(),
        "null_sd": sd.tolist(), "null_z": (diff / sd).tolist(),
        "null_mc_sd": delta_r.std(-1).tolist(),
        "diff_norm": (ca["norm"][:, :, j] - cb["norm"][:, :, j]).mean(0).tolist(),
    }


def summarise(study: Study) -> dict[str, Any]:
    t0 = time.time()
    cfg = study.cfg.align
    layout = study.layout
    conds = load_conditions(layout)
    any_c = next(iter(conds.values()))
    positions: list[str] = any_c["positions"]
    layer = int(any_c["layer"])
    nb, seed = cfg.n_bootstrap, study.cfg.seed
    per_cond: dict[str, Any] = {}
    for name, c in conds.items():
        loss = c["loss"].numpy()[:, None]
        per_cond[name] = {
            **compact_prompt(c["system_prompt"], c),
            "n": int(loss.shape[0]),
            "loss": _ci_block(loss, nb, seed),
            **({"content_loss": _ci_block(c["content_loss"].numpy()[:, None], nb, seed)} if "content_loss" in c else {}),
            **({"leak": c["leak"]} if "leak" in c else {}),
            "cos": {p: _ci_block(c["cos"][:, :, j].numpy(), nb, seed) for j, p in enumerate(positions)},
            "norm": {p: _ci_block(c["norm"][:, :, j].numpy(), nb, seed) for j, p in enumerate(positions)},
            "proj": {p: _ci_block(c["proj"][:, :, j].numpy(), nb, seed) for j, p in enumerate(positions)},
        }
    contrasts: dict[str, Any] = {}
    dirs = random_unit_directions(study.tlm.d_model, cfg.n_random, rng=seed)  # (K, d)
    for a, b in contrast_pairs(list(conds)):
        key = f"{a}-{b}"
        block: dict[str, Any] = {}
        dl, dlo, dhi, dp = paired_bootstrap_diff_by_col(conds[a]["loss"].numpy()[:, None],
                                                         conds[b]["loss"].numpy()[:, None], nb, rng=seed)
        block["loss"] = {"diff": float(dl[0]), "lo": float(dlo[0]), "hi": float(dhi[0]), "p": float(dp[0])}
        D = (conds[a]["mean_unit_neg_grad"] - conds[b]["mean_unit_neg_grad"]).double().numpy()  # (L, P, d)
        delta_r_all = D @ dirs.T  # (L, P, K): the same contrast measured along each random direction
        for j, p in enumerate(positions):
            block[p] = position_contrast(conds[a], conds[b], j, D[:, j], delta_r_all[:, j], nb, seed)
        contrasts[key] = block
    regression = _regressions({n: c for n, c in conds.items() if n in LEGACY_CONDITIONS}, positions, nb, seed)
    summary = {
        "sign_convention": SIGN_NOTE,
        "layer": layer,
        "positions": positions,
        "direction_position": any_c["direction_position"],
        "n_random": cfg.n_random,
        "null_note": "random-direction null: the contrast in mean cos(-g, r) for r uniform on the sphere; "
        "p exact (incomplete beta) and Monte-Carlo over n_random directions; Holm across layers",
        "n_bootstrap": nb,
        "conditions": per_cond,
        "contrasts": contrasts,
        "regression": regression,
        "regression_conditions": [n for n in conds if n in LEGACY_CONDITIONS],
    }
    if "neutral" in conds and len(conds) > 1:
        summary["example_regression"] = _example_level(conds, positions, nb, seed)
    split = loss_split(conds, nb, seed)
    if split:
        summary["loss_split"] = split
    leaks = leak_matches(conds, nb, seed)
    if leaks:
        summary["leak_match"] = leaks
    lm_path = layout.lossmatch
    if lm_path.is_file():
        summary["lossmatch"] = {k: v for k, v in A.read_json(lm_path).items() if k != "candidates"}
    summary.update(_issue22_blocks(layout, conds, positions, layer, any_c["direction_position"], dirs, nb, seed))
    A.write_json(layout.align_summary, summary)
    n_rows = _write_rows(layout.align_rows, conds, positions)
    _plots(layout.align_dir, conds, per_cond, contrasts, positions, dirs)
    render_run_figures(layout.root)  # cos vs layer, loss split, dial, Δcos vs parts when their inputs exist
    study.prov.stage("align_summary", time.time() - t0, n_rows=n_rows)
    _log_headline(summary)
    return summary


def _issue22_blocks(layout: RunLayout, conds: dict[str, Any], positions: list[str], layer: int, direction_position: str,
                    dirs: np.ndarray, nb: int, seed: int) -> dict[str, Any]:
    """Issue 22's blocks, each only when its inputs were measured (older align folders get none of them):
    ``beyond_leak`` and ``leak_shift`` (:mod:`.align_beyond`), ``structured_null`` (:mod:`.align_structured`)."""
    leak = A.read_json(layout.leak) if layout.leak.is_file() else None
    v = others = None
    if layout.directions.is_file():
        blob = A.load_torch(layout.directions)
        v = blob["v"][:, list(blob["positions"]).index(direction_position)][layer].double().numpy()
    if layout.other_directions.is_file():
        other = A.load_torch(layout.other_directions)
        if other["position"] == direction_position:
            others = {n: x[layer].double().numpy() for n, x in other["v"].items()}
    blocks = {"beyond_leak": beyond_leak(conds, contrast_pairs(list(conds)), dirs, nb, seed, position_contrast,
                                         _ci_block),
              "leak_shift": leak_shift(conds, positions, leak, nb, seed),
              "structured_null": structured_null(conds, positions, layer, v, others, nb, seed)}
    return {k: b for k, b in blocks.items() if b is not None}


def loss_split(conds: dict[str, Any], nb: int, seed: int) -> dict[str, Any]:
    """Per condition, its loss reduction relative to neutral split into content and trait parts, with paired
    bootstrap CIs over examples (one resampling for the three parts): total R = L(neutral) - L(P), content
    R_c = L_c(neutral) - L_c(P), trait R_t = R - R_c, where L_c is the loss of the example's untraited answer.
    {} unless neutral has ``content_loss``; conditions without it are left out (and listed)."""
    if "neutral" not in conds or "content_loss" not in conds["neutral"]:
        return {}

    def parts(c: dict[str, Any]) -> np.ndarray:
        total, content = c["loss"].double().numpy(), c["content_loss"].double().numpy()
        return np.column_stack([total, content, total - content])

    base = parts(conds["neutral"])
    out: dict[str, Any] = {"parts": "total R = L(neutral) - L(P); content R_c = L_c(neutral) - L_c(P); trait R - R_c",
                           "conditions": {}, "without_content_loss": []}
    for name, c in conds.items():
        if name == "neutral":
            continue
        if "content_loss" not in c:
            out["without_content_loss"].append(name)
            continue
        diff, lo, hi, p = paired_bootstrap_diff_by_col(base, parts(c), nb, rng=seed)
        out["conditions"][name] = {k: {"mean": float(diff[j]), "lo": float(lo[j]), "hi": float(hi[j]), "p": float(p[j])}
                                   for j, k in enumerate(LOSS_PARTS)}
    return out


def leak_matches(conds: dict[str, Any], nb: int, seed: int) -> dict[str, Any]:
    """For every ``leak_<t>`` control: its loss reduction vs t's (both relative to neutral), and the gap as a
    share of t's reduction, with CIs from one bootstrap over examples; matched when |share| <= the tolerance
    (issue 16: within +-10% of the target's gap to neutral). The leak's own ``leak`` record (its dial) is kept."""
    out: dict[str, Any] = {}
    for name, c in conds.items():
        t = leak_target(name)
        if t not in conds or "neutral" not in conds:
            continue
        ln = conds["neutral"]["loss"].double().numpy()
        red = np.column_stack([ln - c["loss"].double().numpy(), ln - conds[t]["loss"].double().numpy()])
        boots = bootstrap_col_means(red, nb, seed)
        est = red.mean(axis=0)
        lo, hi = percentile_interval(boots, 0.05)
        with np.errstate(invalid="ignore", divide="ignore"):
            share_b = (boots[:, 0] - boots[:, 1]) / boots[:, 1]
        share = float((est[0] - est[1]) / est[1]) if est[1] != 0 else float("nan")
        ok = np.isfinite(share_b)
        s_lo, s_hi = percentile_interval(share_b[ok], 0.05) if ok.any() else (np.nan, np.nan)
        out[name] = {"target": t, "dial": c.get("leak"),
                     "reduction": {"mean": float(est[0]), "lo": float(lo[0]), "hi": float(hi[0])},
                     "target_reduction": {"mean": float(est[1]), "lo": float(lo[1]), "hi": float(hi[1])},
                     "gap_share": {"mean": share, "lo": float(s_lo), "hi": float(s_hi)},
                     "tolerance": LEAK_MATCH_TOLERANCE, "matched": bool(abs(share) <= LEAK_MATCH_TOLERANCE)}
    return out


def _example_level(conds: dict[str, Any], positions: list[str], nb: int, seed: int) -> dict[str, Any]:
    """Control C per example (:mod:`nnsight_inoc.report.control_c`) at every layer of both regression positions."""
    loss = {n: c["loss"].double().numpy() for n, c in conds.items()}
    by_position: dict[str, Any] = {}
    for p in REGRESSION_POSITIONS:
        j = positions.index(p)
        n_layers = conds["neutral"]["cos"].shape[1]
        by_position[p] = {str(l): example_level_at({n: c["cos"][:, l, j].double().numpy() for n, c in conds.items()},
                                                   loss, {n: c["norm"][:, l, j].double().numpy()
                                                          for n, c in conds.items()}, nb, seed + l)
                          for l in range(n_layers)}
    return {"note": MODEL_NOTE, "by_position": by_position}


def _regressions(conds: dict[str, Any], positions: list[str], nb: int, seed: int) -> dict[str, Any]:
    """alignment ~ condition + z(loss) + z(log |g|), per layer, cluster bootstrap over examples."""
    if "neutral" not in conds or "inoc" not in conds:
        return {}
    names = list(conds)
    ids = np.concatenate([np.asarray(conds[n]["ids"]) for n in names])
    cond = np.concatenate([np.full(len(conds[n]["ids"]), n) for n in names])
    loss = np.concatenate([conds[n]["loss"].numpy() for n in names])
    out: dict[str, Any] = {}
    baselines = ["neutral"] + (["lossmatch"] if "lossmatch" in conds else [])
    for p in REGRESSION_POSITIONS:
        j = positions.index(p)
        cos = np.concatenate([conds[n]["cos"][:, :, j].numpy() for n in names])  # (N, L)
        lognorm = np.concatenate([np.log(conds[n]["norm"][:, :, j].numpy()) for n in names])
        for base in baselines:
            rows = []
            for l in range(cos.shape[1]):
                r = condition_effect_regression(
                    cos[:, l], cond, ids, {"loss": loss, "log_grad_norm": lognorm[:, l]},
                    baseline=base, target="inoc", n_boot=nb, rng=seed + l,
                )
                rows.append(r)
            pv = np.array([r["coef_adjusted_p_boot"] for r in rows])
            padj = holm(pv)
            for r, q in zip(rows, padj):
                r["coef_adjusted_p_holm"] = float(q)
            out[f"{p}/inoc_vs_{base}"] = rows
    return out


def _write_rows(path: Path, conds: dict[str, Any], positions: list[str]) -> int:
    """The tidy table; a ``content_loss`` column only when every condition measured it (old readers keep working)."""
    content = all("content_loss" in c for c in conds.values())

    def rows():
        for name, c in conds.items():
            cos, proj, norm, loss = (c[k].numpy() for k in ("cos", "proj", "norm", "loss"))
            extra = c["content_loss"].numpy() if content else None
            for i, ex in enumerate(c["ids"]):
                tail = (f"{extra[i]:.6g}",) if extra is not None else ()
                for l in range(cos.shape[1]):
                    for j, p in enumerate(positions):
                        yield (ex, name, l, p, f"{proj[i, l, j]:.6g}", f"{norm[i, l, j]:.6g}",
                               f"{cos[i, l, j]:.6g}", f"{loss[i]:.6g}", *tail)

    return A.write_csv_gz(path, ["example_id", "condition", "layer", "position", "proj_neg_g_v", "grad_norm",
                                 "cos_neg_g_v", "loss", *(["content_loss"] if content else [])], rows())


def _plots(out_dir: Path, conds: dict[str, Any], per_cond: dict[str, Any], contrasts: dict[str, Any],
           positions: list[str], dirs: np.ndarray) -> None:
    sty = run_styles(out_dir.parent, extra=conds)  # the study's one look per condition (report/palette.py)
    for p in ("final_prompt", "a_sum"):
        curves = {n: tuple(np.array(per_cond[n]["cos"][p][k]) for k in ("mean", "lo", "hi")) for n in conds}
        plots.curves_with_ci(out_dir / cos_plot(p), curves, "mean cos(-g, v)",
                             f"gradient alignment with v at {p} (95% bootstrap CI over examples, the CI C1 uses)"
                             f"\n{SIGN_NOTE}", styles=sty)
        norms = {n: tuple(np.array(per_cond[n]["norm"][p][k]) for k in ("mean", "lo", "hi")) for n in conds}
        plots.curves_with_ci(out_dir / norm_plot(p), norms, "mean |g|",
                             f"gradient norm at {p} (95% bootstrap CI over examples)", hline=None, logy=True,
                             styles=sty)
    plots.loss_by_condition(out_dir / LOSS_PLOT,
                            {n: (per_cond[n]["loss"]["mean"][0], per_cond[n]["loss"]["lo"][0],
                                 per_cond[n]["loss"]["hi"][0]) for n in conds}, styles=sty)
    for key in ("inoc-neutral", "inoc-lossmatch", "inoc-leak_inoc"):
        if key not in contrasts:
            continue
        a, b = key.split("-", 1)
        for p in ("final_prompt", "a_sum"):
            j = positions.index(p)
            D = (conds[a]["mean_unit_neg_grad"][:, j] - conds[b]["mean_unit_neg_grad"][:, j]).double().numpy()
            blk = contrasts[key][p]
            plots.null_panel(out_dir / null_plot(a, b, p), np.array(blk["diff_cos"]), D @ dirs[:2000].T,
                             np.array(blk["null_p_exact_holm"]), f"{a} - {b} ({p})")


def _log_headline(s: dict[str, Any]) -> None:
    l = s["layer"]
    c = s["contrasts"].get("inoc-neutral")
    if c is None:
        return
    b = c["final_prompt"]
    log(
        f"layer {l}, final prompt: delta cos(-g,v) inoc-neutral = {b['diff_cos'][l]:+.4f} "
        f"[{b['lo'][l]:+.4f}, {b['hi'][l]:+.4f}], random-direction z {b['null_z'][l]:+.1f}, "
        f"exact null p (Holm) {b['null_p_exact_holm'][l]:.3g}"
    )
