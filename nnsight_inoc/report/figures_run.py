"""Render every figure of :mod:`.figures_drift` and :mod:`.figures_align` whose inputs a run folder holds.

Reads only the folder's JSON (align summary, ``leak.json``, finetune summary, the runs' ``train.json`` and
``drift.json``), builds one condition -> colour map from every condition it finds (so a condition looks the
same in every figure), and prints one line per figure it skips, saying which input is absent.
:func:`controls_probe_figures` draws the same loss, dial and alignment figures from
``experiments/controls_probe.py``'s JSON (``results/allcaps_controls``).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.report import figures_align as FA
from nnsight_inoc.report import figures_drift as FD
from nnsight_inoc.report.palette import ARMS, condition_order, condition_styles
from nnsight_inoc.stats.bootstrap import paired_bootstrap_diff_by_col

HEADLINE = "fig_headline_drift.png"
PROJECTION_PANELS = "fig_projection_shift_panels.png"
PROBE_COS = "fig_cos_vs_layer_probe_step0.png"
ALIGN_COS = "fig_cos_vs_layer_a_sum.png"
LOSS_SPLIT = "fig_loss_split.png"
DIAL = "fig_leak_dial.png"
DCOS_PARTS = "fig_dcos_vs_loss_parts.png"
ALIGN_FIGURES = (ALIGN_COS, LOSS_SPLIT, DIAL, DCOS_PARTS)  # under align/
DRIFT_FIGURES = (HEADLINE, PROJECTION_PANELS, PROBE_COS)  # under finetune/
COS_CONDITIONS = ("neutral", "inoc", "lossmatch", "leak_inoc")  # + the causal arms
POSITION = "a_sum"


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _try(done: dict[str, str], name: str, needs: str | None, draw: Callable[[], Any], path: Path) -> None:
    if needs is not None:
        print(f"figure {name} skipped: {needs}")
        done[name] = f"skipped: {needs}"
        return
    draw()
    done[name] = str(path)


def _align_points(summ: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    L, conds, split = summ["layer"], summ["conditions"], summ["loss_split"]["conditions"]
    base = conds["neutral"]["cos"][POSITION]["mean"][L]
    out = {"neutral": {"dcos": 0.0, "trait": 0.0, "content": 0.0}}
    for c, p in split.items():
        out[c] = {"dcos": conds[c]["cos"][POSITION]["mean"][L] - base, "trait": p["trait"]["mean"],
                  "content": p["content"]["mean"]}
    return out


def run_styles(run_dir: Path, extra: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """The study's one map condition -> look (:func:`~.palette.condition_styles`), for every plot of the run
    folder, old and new: from the align summary's conditions, the configured causal arms, the finetune summary's
    conditions and ``extra`` (the names a stage is plotting before its summary is written), in that order, so
    the align stage and the drift stage build the same map."""
    lay = RunLayout(Path(run_dir))
    align, fsum = _read(lay.align_summary), _read(lay.summary(False))
    cfg = tomllib.loads(lay.config.read_text()) if lay.config.is_file() else {}
    names = [*(align or {}).get("conditions", {}), *(cfg.get("intervene") or {}).get("arms", []),
             *(r["condition"] for r in (fsum or {}).get("rows") or []), *extra]
    return condition_styles(condition_order(names))


def render_run_figures(run_dir: Path) -> dict[str, str]:
    """Every figure whose inputs exist, into align/ and finetune/; returns {file name: path or why skipped}."""
    lay = RunLayout(Path(run_dir))
    align, leak = _read(lay.align_summary), _read(lay.leak)
    fsum = _read(lay.summary(False))
    rows = (fsum or {}).get("rows") or []
    sty = run_styles(run_dir)
    done: dict[str, str] = {}
    a_dir, f_dir = lay.align_dir, lay.finetune_dir

    cos_conds = [c for c in (*COS_CONDITIONS, *ARMS) if align and c in align["conditions"]]
    _try(done, ALIGN_COS, None if cos_conds else f"no {lay.align_summary.name} with neutral/inoc conditions",
         lambda: FA.cos_vs_layer(a_dir / ALIGN_COS, {c: tuple(align["conditions"][c]["cos"][POSITION][k]
                                                             for k in ("mean", "lo", "hi")) for c in cos_conds},
                                 align["layer"], POSITION, f"band: 95% bootstrap CI over examples (n = "
                                 f"{align['conditions'][cos_conds[0]]['n']}), align stage", sty),
         a_dir / ALIGN_COS)
    has_split = bool(align and align.get("loss_split", {}).get("conditions"))
    need_split = None if has_split else "the align summary has no loss_split (no content_loss measured)"
    _try(done, LOSS_SPLIT, need_split, lambda: FA.loss_split_bars(
        a_dir / LOSS_SPLIT, align["loss_split"]["conditions"], align["conditions"]["neutral"]["n"]), a_dir / LOSS_SPLIT)
    _try(done, DCOS_PARTS, need_split, lambda: FA.dcos_vs_parts(
        a_dir / DCOS_PARTS, _align_points(align), align["layer"], POSITION, align["conditions"]["neutral"]["n"]),
        a_dir / DCOS_PARTS)
    _try(done, DIAL, None if leak and leak.get("curve") else f"no {lay.leak.name} with a dial curve",
         lambda: FA.dial_curve(a_dir / DIAL, leak["curve"], leak["targets"], leak.get("n_examples", "?"),
                               (leak.get("key") or {}).get("tolerance")), a_dir / DIAL)

    _try(done, HEADLINE, None if rows else f"no {lay.summary(False).name} with rows",
         lambda: FD.headline_drift(f_dir / HEADLINE, rows, fsum.get("contrasts"), sty), f_dir / HEADLINE)
    proj: dict[str, list] = {}
    for r in rows:
        dr = _read(lay.run(r["condition"], r["seed"]).drift_json)
        if dr is not None:
            proj.setdefault(r["condition"], []).append(dr["neutral_prompt"]["drift"]["projection"])
    _try(done, PROJECTION_PANELS, None if proj else "no run has a drift.json",
         lambda: FD.projection_shift_panels(f_dir / PROJECTION_PANELS, proj, fsum.get("layer"), sty),
         f_dir / PROJECTION_PANELS)
    probes = {}
    for c in (*COS_CONDITIONS, *ARMS):
        seeds = sorted(r["seed"] for r in rows if r["condition"] == c)
        tr = _read(lay.run(c, seeds[0]).train_json) if seeds else None
        if tr and tr.get("probes"):
            j = tr["positions"].index(POSITION)
            probes[c] = (np.asarray(tr["probes"][0]["cos"])[:, j], None, None)
    need = None if any(a in probes for a in ARMS) else "no causal-arm run has a step-0 probe"
    _try(done, PROBE_COS, need, lambda: FA.cos_vs_layer(
        f_dir / PROBE_COS, probes, fsum.get("layer"), POSITION,
        "step-0 probe (train.json), mean over the probe examples; seed-independent (LoRA B = 0 at init): "
        "one seed shown, no interval", sty), f_dir / PROBE_COS)
    return done


def loss_parts_from_examples(conds: Mapping[str, Mapping[str, Any]], n_boot: int = 2000,
                             seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Per condition (not neutral) its loss reduction vs neutral and the trait and content parts, each with a
    paired bootstrap CI over examples (one resampling for the three parts), from per-example ``loss`` and
    ``content_loss`` lists: the align summary's ``loss_split`` computed from plain lists."""
    def parts(c: Mapping[str, Any]) -> np.ndarray:
        t, k = np.asarray(c["loss"], dtype=np.float64), np.asarray(c["content_loss"], dtype=np.float64)
        return np.column_stack([t, k, t - k])

    base = parts(conds["neutral"])
    out = {}
    for name, c in conds.items():
        if name == "neutral":
            continue
        diff, lo, hi, _ = paired_bootstrap_diff_by_col(base, parts(c), n_boot, rng=seed)
        out[name] = {k: {"mean": float(diff[j]), "lo": float(lo[j]), "hi": float(hi[j])}
                     for j, k in enumerate(("total", "content", "trait"))}
    return out


def controls_probe_figures(probe: Mapping[str, Any], out_dir: Path, leak: Mapping[str, Any] | None = None,
                           n_boot: int = 2000) -> dict[str, str]:
    """The loss split, the dial and Δcos against both parts from ``experiments/controls_probe.py``'s JSON."""
    conds, L = probe["conditions"], probe["layer"]
    j = probe["positions"].index(POSITION)
    parts = loss_parts_from_examples(conds, n_boot)
    n = probe["n_examples"]
    base = conds["neutral"]["mean_cos"][L][j]
    points = {"neutral": {"dcos": 0.0, "trait": 0.0, "content": 0.0}}
    points.update({c: {"dcos": conds[c]["mean_cos"][L][j] - base, "trait": p["trait"]["mean"],
                       "content": p["content"]["mean"]} for c, p in parts.items()})
    leak = leak or probe.get("leak")
    done: dict[str, str] = {}
    _try(done, LOSS_SPLIT, None, lambda: FA.loss_split_bars(out_dir / LOSS_SPLIT, parts, n), out_dir / LOSS_SPLIT)
    _try(done, DCOS_PARTS, None, lambda: FA.dcos_vs_parts(out_dir / DCOS_PARTS, points, L, POSITION, n),
         out_dir / DCOS_PARTS)
    _try(done, DIAL, None if leak and leak.get("curve") else "no leak dial in the input",
         lambda: FA.dial_curve(out_dir / DIAL, leak["curve"], leak["targets"], leak.get("n_examples", n),
                               (leak.get("key") or {}).get("tolerance")), out_dir / DIAL)
    return done
