"""Stage `extract`: build v(l) from promote/suppress prompts and run its sanity checks."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.layout import EXTRACT_PLOTS
from nnsight_inoc.core.progress import log
from nnsight_inoc.data.traits import score_texts
from nnsight_inoc.measures.directions import (
    POSITIONS,
    choose_layer,
    mean_difference,
    monitoring_correlation,
    project,
    separation,
)
from nnsight_inoc.probes.residuals import read_final, read_positions
from nnsight_inoc.report import plots
from nnsight_inoc.report.monitoring import within_prompt_summary
from nnsight_inoc.stages.other_traits import other_trait_directions
from nnsight_inoc.study import Study, answers


def _answers(study: Study, system: str, users: Sequence[str], label: str) -> list[str]:
    return answers(study, system, users, study.cfg.extract.max_new_tokens, f"generate: {label}")


def run_extract(study: Study) -> dict[str, Any]:
    t0 = time.time()
    trait, cfg = study.trait, study.cfg.extract
    sp = study.splits
    groups = {"promote": trait.promote, "suppress": trait.suppress}
    acts: dict[tuple[str, str], torch.Tensor] = {}
    behaviour: dict[str, dict[str, Any]] = {}
    for part, prompts in (("train", sp.direction), ("heldout", sp.direction_heldout)):
        users = [p.text for p in prompts]
        for g, system in groups.items():
            ans = _answers(study, system, users, f"{part}/{g}")
            acts[(part, g)] = read_positions(study.tlm, study.loaded.tokenizer, system, users, ans, cfg.batch_size)
            s = score_texts(trait, ans)
            behaviour[f"{part}/{g}"] = {
                "mean_score": s.mean,
                "share_above_half": s.share_above_half,
                "n": len(ans),
                "n_unscored": s.n_unscored,
            }
    v = mean_difference(acts[("train", "promote")], acts[("train", "suppress")])
    proj_p = project(acts[("heldout", "promote")], v).numpy()
    proj_s = project(acts[("heldout", "suppress")], v).numpy()
    sep = separation(proj_p, proj_s)

    # Monitoring: does the final-prompt projection track how much of the trait the answer shows?
    mon_users = [p.text for p in sp.direction_heldout[: cfg.n_monitor_prompts]]
    mon_rows: list[list[Any]] = []
    mon_proj, mon_scores = [], []
    for k, system in enumerate(cfg.monitor_prompts):
        ans = _answers(study, system, mon_users, f"monitor {k + 1}/{len(cfg.monitor_prompts)}")
        h = read_final(study.tlm, study.loaded.tokenizer, system, mon_users, cfg.batch_size)  # (n, L, d)
        pj = torch.einsum("nld,ld->nl", h.double(), v[:, 0].double()).numpy()
        sc = score_texts(trait, ans).scores
        mon_proj.append(pj)
        mon_scores.append(sc)
        for i in range(len(mon_users)):
            mon_rows.append([k, system, sp.direction_heldout[i].id, sc[i], *pj[i].tolist()])
    proj_all = np.concatenate(mon_proj)
    score_all = np.concatenate(mon_scores)
    corr = monitoring_correlation(proj_all, score_all)
    r_by_layer = np.array([c["pearson_r"] for c in corr])
    layer, reason = choose_layer(sep.auroc[:, 0], r_by_layer)
    # The pooled r mostly compares the monitoring prompts; the within-prompt r is reported beside it.
    prompt_index = np.repeat(np.arange(len(cfg.monitor_prompts)), len(mon_users))
    within = within_prompt_summary(proj_all, score_all, prompt_index, layer, study.cfg.align.n_bootstrap,
                                   study.cfg.seed)

    meta = {
        "trait": trait.name,
        "promote": trait.promote,
        "suppress": trait.suppress,
        "positions": list(POSITIONS),
        "model_sha256": study.loaded.sha256,
        "model_name": study.loaded.name,
        "splits_sha256": sp.sha256(),
        "direction_prompt_ids": [p.id for p in sp.direction],
        "layer": layer,
    }
    layout = study.layout
    A.save_torch(layout.directions, {"v": v, **meta})
    L = v.shape[0]
    A.write_csv_gz(
        layout.monitor_table,
        ["system_index", "system_prompt", "prompt_id", "trait_score", *[f"proj_l{l}" for l in range(L)]],
        mon_rows,
    )
    summary = {
        **{k: v_ for k, v_ in meta.items() if k != "direction_prompt_ids"},
        "layer_rule": reason,
        "n_direction_train": len(sp.direction),
        "n_direction_heldout": len(sp.direction_heldout),
        "behaviour": behaviour,
        "heldout_auroc": {p: sep.auroc[:, j].tolist() for j, p in enumerate(POSITIONS)},
        "heldout_cohens_d": {p: sep.cohens_d[:, j].tolist() for j, p in enumerate(POSITIONS)},
        "monitoring": {
            "system_prompts": list(cfg.monitor_prompts),
            "n_generations": int(len(score_all)),
            "n_unscored": int(np.isnan(score_all).sum()),
            "mean_score_by_prompt": [float(np.nanmean(s)) if np.isfinite(s).any() else None for s in mon_scores],
            "by_layer": corr,
            "within_prompt": within,
        },
        "chosen": {
            "layer": layer,
            "auroc": float(sep.auroc[layer, 0]),
            "cohens_d": float(sep.cohens_d[layer, 0]),
            "pearson_r": float(corr[layer]["pearson_r"]),
            "spearman_r": float(corr[layer]["spearman_r"]),
        },
    }
    A.write_json(layout.extract_summary, summary)
    hist_png, scatter_png, separation_png = (layout.extract_dir / n for n in EXTRACT_PLOTS)
    plots.projection_hist(hist_png, proj_p[:, layer, 0], proj_s[:, layer, 0], layer, trait.name)
    plots.monitor_scatter(scatter_png, proj_all[:, layer], score_all, corr[layer], layer,
                          groups=[cfg.monitor_prompts[k] for k in prompt_index], within=within["chosen"])
    plots.separation_vs_layer(separation_png, sep.auroc, sep.cohens_d, r_by_layer, POSITIONS, layer)
    other_trait_directions(study)  # C1's structured null (issue 22): beside directions.pt, never changes v
    study.prov.stage("extract", time.time() - t0, layer=layer)
    log(
        f"extract: layer {layer} ({reason}); held-out AUROC {summary['chosen']['auroc']:.3f}, "
        f"monitoring r {summary['chosen']['pearson_r']:.3f} (within prompts {within['chosen'].get('r', float('nan')):.3f})"
    )
    return summary
