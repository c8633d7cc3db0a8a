"""Report generator: end to end on the committed allcaps run (copied, never written in place),
and the verdict rules on small synthetic summaries whose right answer is obvious."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest

from nnsight_inoc.report import alignment_rules as R
from nnsight_inoc.report.claims import all_verdicts
from nnsight_inoc.report.sections import write_report
from nnsight_inoc.report.verdicts import (
    INCONCLUSIVE,
    LABELS,
    NOT_SUPPORTED,
    SUPPORTED,
    layer_ranges,
)
from tests._paths import ROOT

ALLCAPS = ROOT / "results" / "allcaps"
N_LAYERS, CHOSEN = 8, 7


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    run = tmp_path_factory.mktemp("r") / "allcaps"
    # Without the finetune outputs: this fixture checks how a run without drift reads.
    shutil.copytree(ALLCAPS, run, ignore=shutil.ignore_patterns("report.md", "report.html", "finetune",
                                                               "provenance.worker*"))
    md, htm = write_report(run)
    return run, md, htm


def test_both_files_written_into_run_dir(written: tuple[Path, Path, Path]) -> None:
    run, md, htm = written
    assert md == run / "report.md" and htm == run / "report.html"
    assert md.stat().st_size > 1000 and htm.stat().st_size > 1000


def test_html_self_contained(written: tuple[Path, Path, Path]) -> None:
    text = written[2].read_text()
    assert "data:image/png;base64," in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in text and 'href="' not in text


@pytest.mark.parametrize("cid", [c for c, _ in R.CLAIMS])
def test_every_verdict_line_labelled(written: tuple[Path, Path, Path], cid: str) -> None:
    md, htm = written[1].read_text(), written[2].read_text()
    labels = "|".join(LABELS)
    assert re.search(rf"^- \*\*{cid}\*\* .+: \*\*({labels})\*\*\. ", md, re.M), cid
    assert re.search(rf"<strong>{cid}</strong> .+?: <strong class=\"[a-z-]+\">({labels})</strong>", htm), cid


def test_reproduce_command_and_header(written: tuple[Path, Path, Path]) -> None:
    run, md, htm = written
    prov = json.loads((run / "provenance.json").read_text())
    for text, cmd in ((md.read_text(), prov["command"]), (htm.read_text(), html.escape(prov["command"]))):
        assert cmd in text
        assert prov["facts"]["model"]["sha256"] in text and prov["git"]["commit"] in text
        assert prov["device"]["cuda_device"] in text


def test_drift_not_run(written: tuple[Path, Path, Path]) -> None:
    md = written[1].read_text()
    drift = md.split("## 4.")[1].split("## 5.")[0]
    assert "not run" in drift
    assert re.search(r"\*\*C5\*\* .+: \*\*inconclusive\*\*\. not run", md)
    assert re.search(r"\*\*C6\*\* .+: \*\*inconclusive\*\*\. not run", md)


def test_out_dir_elsewhere_keeps_links(written: tuple[Path, Path, Path], tmp_path: Path) -> None:
    md, _ = write_report(written[0], tmp_path / "out")
    for rel in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md.read_text()):
        assert (md.parent / rel).is_file(), rel


def test_missing_extract_names_the_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Without the finetune outputs: this fixture checks how a run without drift reads.
    shutil.copytree(ALLCAPS, run, ignore=shutil.ignore_patterns("report.md", "report.html", "finetune",
                                                               "provenance.worker*"))
    (run / "extract" / "extract_summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="extract_summary.json"):
        write_report(run)
    assert not (run / "report.md").exists()


# ---- rules on synthetic summaries -------------------------------------------------------------

def _block(diff: list[float], p_boot: float | list[float] = 0.01, p_null: float | list[float] = 0.01) -> dict:
    """A contrast block; the unadjusted p and the CI (what the fixed-layer rule reads) follow the Holm p given:
    a layer whose bootstrap p is below 0.05 gets a CI that excludes 0."""
    n = len(diff)
    pb = p_boot if isinstance(p_boot, list) else [p_boot] * n
    pn = p_null if isinstance(p_null, list) else [p_null] * n
    half = [abs(d) / 2 if p < 0.05 else abs(d) * 2 for d, p in zip(diff, pb)]
    return {"diff_cos": diff, "p_boot_holm": pb, "null_p_exact_holm": pn, "p_boot": pb, "null_p_exact": pn,
            "lo": [d - h for d, h in zip(diff, half)], "hi": [d + h for d, h in zip(diff, half)]}


def _loss(diff: float) -> dict:
    return {"diff": diff, "lo": diff - 0.002, "hi": diff + 0.002, "p": 0.0005}


def _align(neutral_block: dict, lossmatch_block: dict | None = None, *, lm_loss: float = -0.001) -> dict:
    lm = lossmatch_block or neutral_block
    return {"layer": CHOSEN, "contrasts": {
        "inoc-neutral": {"loss": _loss(-0.03), "a_sum": neutral_block, "final_prompt": neutral_block},
        "inoc-lossmatch": {"loss": _loss(lm_loss), "a_sum": lm, "final_prompt": lm}}}


NEG = [-0.01] * N_LAYERS


# The layer-search rule (before issue 16) is kept as description (`contrast_verdict`); its assertions stay,
# on that function. The verdicts C1-C3 now use the fixed reporting layer and position (tests below).
def _legacy_c1(align: dict):
    return R.contrast_verdict(align, "inoc-neutral")


def _legacy_c3(align: dict):
    return R.contrast_verdict(align, "inoc-neutral", use_boot=False)


def test_clear_negative_effect_supported() -> None:
    assert _legacy_c1(_align(_block(NEG)))[0] == SUPPORTED
    assert _legacy_c3(_align(_block(NEG, p_boot=0.9)))[0] == SUPPORTED  # null alone
    assert R.c1_rotation(_align(_block(NEG)))[0] == SUPPORTED
    assert R.c3_beyond_random(_align(_block(NEG, p_boot=0.9)))[0] == SUPPORTED


def test_no_significant_layers_not_supported() -> None:
    v, why = _legacy_c1(_align(_block(NEG, p_boot=0.5)))
    assert v == NOT_SUPPORTED and "no layer passes" in why
    assert _legacy_c1(_align(_block([0.01] * N_LAYERS)))[0] == NOT_SUPPORTED  # all toward the trait
    v, why = R.c1_rotation(_align(_block(NEG, p_boot=0.5)))
    assert v == NOT_SUPPORTED and "CI includes 0" in why
    v, why = R.c1_rotation(_align(_block([0.01] * N_LAYERS)))
    assert v == NOT_SUPPORTED and "toward the trait" in why


def test_null_failure_blocks_c1() -> None:
    assert _legacy_c1(_align(_block(NEG, p_null=0.2)))[0] == NOT_SUPPORTED
    v, why = R.c1_rotation(_align(_block(NEG, p_null=0.2)))
    assert v == NOT_SUPPORTED and "not specific to v" in why


def test_mixed_signs_inconclusive() -> None:
    v, why = _legacy_c1(_align(_block([-0.01] * 4 + [0.01] * 4)))
    assert v == INCONCLUSIVE and "mixed" in why


def test_too_few_layers_inconclusive_unless_chosen_layer() -> None:
    p = [0.5] * N_LAYERS
    p[0] = 0.01  # one layer of eight, not the chosen one: below 25%
    assert _legacy_c1(_align(_block(NEG, p_boot=p)))[0] == INCONCLUSIVE
    p = [0.5] * N_LAYERS
    p[CHOSEN] = 0.01
    assert _legacy_c1(_align(_block(NEG, p_boot=p)))[0] == SUPPORTED


def test_c1_is_judged_at_the_reporting_layer_and_a_sum_only() -> None:
    """Issue 16: other layers and the final prompt token describe, they never decide."""
    diff = [0.01] * N_LAYERS
    diff[CHOSEN] = -0.01  # away only at the chosen layer; toward everywhere else
    align = _align(_block(diff))
    align["contrasts"]["inoc-neutral"]["final_prompt"] = _block([0.02] * N_LAYERS)  # toward at every layer
    v, why = R.c1_rotation(align)
    assert v == SUPPORTED and f"layer {CHOSEN}, a_sum" in why and "description only" in why
    assert _legacy_c1(align)[0] == INCONCLUSIVE  # the layer search called the same data mixed
    p = [0.01] * N_LAYERS
    p[CHOSEN] = 0.5  # every other layer significant, the chosen one not
    assert R.c1_rotation(_align(_block(NEG, p_boot=p)))[0] == NOT_SUPPORTED


def test_incomplete_loss_match_inconclusive() -> None:
    matched = _align(_block(NEG), _block(NEG), lm_loss=-0.001)  # 3% of the inoc - neutral gap
    assert R.c2_beyond_lossmatch(matched)[0] == SUPPORTED
    v, why = R.c2_beyond_lossmatch(_align(_block(NEG), _block(NEG), lm_loss=-0.015))  # 50%
    assert v == INCONCLUSIVE and "loss match incomplete" in why and "50%" in why


def _reg(coef: float, lo: float, hi: float, p: float) -> dict:
    return {"coef_adjusted": coef, "coef_adjusted_lo": lo, "coef_adjusted_hi": hi, "coef_adjusted_p_holm": p,
            "partial_r": coef * 10}


def test_regression_rule() -> None:
    """Today's regression rule, kept (as description) under its new name c4_legacy_regression."""
    def align(row: dict) -> dict:
        return {"layer": 0, "regression": {f"{pos}/inoc_vs_neutral": [row] for pos in R.POSITIONS}}

    assert R.c4_legacy_regression(align(_reg(-0.01, -0.02, -0.005, 0.01)))[0] == SUPPORTED
    assert R.c4_legacy_regression(align(_reg(-0.01, -0.02, 0.001, 0.01)))[0] == NOT_SUPPORTED  # CI spans 0
    assert R.c4_legacy_regression(align(_reg(-0.01, -0.02, -0.005, 0.2)))[0] == NOT_SUPPORTED  # Holm p too big
    assert R.c4_legacy_regression(align(_reg(0.01, 0.005, 0.02, 0.01)))[0] == NOT_SUPPORTED  # wrong sign


def _example(inoc: tuple[float, float, float], layer: int = 0) -> dict:
    a = {"est": inoc[0], "lo": inoc[1], "hi": inoc[2], "p_boot": 0.001}
    model = {"intercept": {"inoc": a}, "slope": {"est": 0.01, "lo": 0.0, "hi": 0.02}, "r_dcos_dloss": {"inoc": 0.1},
             "mean_dcos": {"inoc": inoc[0]}, "mean_dloss": {"inoc": -0.03}}
    return {"by_position": {"a_sum": {str(layer): {"primary": model, "mediator": model}}}}


def test_c4_reads_the_per_example_intercept() -> None:
    align = {"layer": 0}
    assert R.c4_regression(align, _example((-0.01, -0.02, -0.005)))[0] == SUPPORTED
    v, why = R.c4_regression(align, _example((-0.01, -0.02, 0.001)))
    assert v == NOT_SUPPORTED and "CI includes 0" in why and "mediator model" in why
    assert R.c4_regression(align, _example((0.01, 0.005, 0.02)))[0] == NOT_SUPPORTED
    v, why = R.c4_regression(align, None)
    assert v == INCONCLUSIVE and "not computable" in why
    assert R.c4_regression(align, _example((-0.01, -0.02, -0.005), layer=3))[0] == INCONCLUSIVE  # other layer


def test_failed_direction_caps_verdicts(tmp_path: Path) -> None:
    extract = {"chosen": {"auroc": 0.8, "pearson_r": 0.7}}
    align = _align(_block(NEG))
    align["regression"] = {f"{pos}/inoc_vs_neutral": [_reg(-0.01, -0.02, -0.005, 0.01)] * N_LAYERS
                           for pos in R.POSITIONS}
    verdicts = {cid: v for cid, _, v in all_verdicts(tmp_path, extract, align)}
    assert verdicts["C1"][0] == INCONCLUSIVE and "AUROC 0.800 < 0.95" in verdicts["C1"][1]
    assert verdicts["C5"][0] == INCONCLUSIVE and verdicts["C5"][1].startswith("not run")


def test_layer_ranges() -> None:
    assert layer_ranges([2, 3, 4, 9, 11, 12]) == "2–4, 9, 11–12"
    assert layer_ranges([]) == "none"


def test_drift_runs_without_summary_are_not_read(tmp_path: Path) -> None:
    """Per-run drift files without the stage summary (an interrupted drift stage) decide nothing."""
    from nnsight_inoc.report import drift_rules as DR

    (tmp_path / "finetune" / "inoc_seed0").mkdir(parents=True)
    (tmp_path / "finetune" / "inoc_seed0" / "drift.json").write_text("{}")
    v, why = DR.c5_drift(tmp_path)
    assert v == INCONCLUSIVE and "finetune_summary.json" in why


def _write_drift_summary(run_dir, rows, relation):
    import json as _json

    (run_dir / "finetune").mkdir(parents=True, exist_ok=True)
    (run_dir / "finetune" / "finetune_summary.json").write_text(_json.dumps(
        {"layer": 3, "rows": rows, "correlations": {}, "relation": relation, "position": "a_sum", "which": "main",
         "n_runs": len(rows), "not_run": [], "sign_note": "", "condition_means": {}}))


def _rel(r, lo, hi, groups=8):
    return {"r": r, "lo": lo, "hi": hi, "n_runs": 3 * groups, "n_groups": groups}


def test_drift_rules(tmp_path):
    from nnsight_inoc.report import drift_rules as DR

    assert DR.c5_drift(tmp_path)[0] == INCONCLUSIVE and "not run" in DR.c5_drift(tmp_path)[1]
    rows = [{"condition": c, "seed": s, "drift_score": d}
            for s in (0, 1, 2) for c, d in (("neutral", 0.30), ("inoc", 0.05), ("lossmatch", 0.25))]
    rel = {"align_pre~drift_score": _rel(0.8, 0.5, 0.95), "loss_reduction~drift_score": _rel(-0.9, -0.97, -0.7),
           "align_pre~drift_score|loss_reduction": _rel(0.02, -0.4, 0.45)}
    _write_drift_summary(tmp_path, rows, rel)
    assert DR.c5_drift(tmp_path)[0] == SUPPORTED
    v, why = DR.c6_drift_tracks_alignment(tmp_path)
    assert v == SUPPORTED and "the larger |r|: loss reduction" in why
    assert DR.c7_alignment_beyond_loss(tmp_path)[0] == NOT_SUPPORTED  # |partial r| < 0.1
    assert DR.c8_drift_beyond_lossmatch(tmp_path, _align_with_losses(1.0, 0.9, 0.9))[0] == SUPPORTED
    v, why = DR.c8_drift_beyond_lossmatch(tmp_path, _align_with_losses(1.0, 0.9, 0.99))
    assert v == INCONCLUSIVE and "loss match incomplete" in why
    rel["align_pre~drift_score"] = _rel(0.8, 0.5, 0.95, groups=4)  # too few prompts to call
    _write_drift_summary(tmp_path, rows, rel)
    assert DR.c6_drift_tracks_alignment(tmp_path)[0] == INCONCLUSIVE
    rows[1]["drift_score"] = 0.9  # inoc drifts more for seed 0: seeds disagree
    rel["align_pre~drift_score"] = _rel(0.3, -0.2, 0.7)
    _write_drift_summary(tmp_path, rows, rel)
    assert DR.c5_drift(tmp_path)[0] == INCONCLUSIVE
    assert DR.c6_drift_tracks_alignment(tmp_path)[0] == INCONCLUSIVE
    worse = [{"condition": c, "seed": s, "drift_score": d} for s in (0, 1, 2) for c, d in (("neutral", 0.1), ("inoc", 0.4))]
    _write_drift_summary(tmp_path, worse, {"align_pre~drift_score": {"error": "x or y is constant"}})
    assert DR.c5_drift(tmp_path)[0] == NOT_SUPPORTED
    assert DR.c6_drift_tracks_alignment(tmp_path)[0] == INCONCLUSIVE
    assert DR.c8_drift_beyond_lossmatch(tmp_path, _align_with_losses(1.0, 0.9, 0.9))[0] == INCONCLUSIVE


def _align_with_losses(neutral: float, inoc: float, lossmatch: float) -> dict:
    return {"contrasts": {"inoc-neutral": {"loss": {"diff": inoc - neutral}},
                          "inoc-lossmatch": {"loss": {"diff": inoc - lossmatch}}}}


def test_c7_inconclusive_when_alignment_and_loss_are_collinear(tmp_path):
    from nnsight_inoc.report import drift_rules as DR

    rows = [{"condition": c, "seed": s, "drift_score": d} for s in (0, 1, 2) for c, d in (("neutral", .3), ("inoc", .1))]
    rel = {"align_pre~drift_score|loss_reduction": _rel(0.6, 0.3, 0.8), "align_pre~loss_reduction": _rel(-0.99, -1, -0.98)}
    _write_drift_summary(tmp_path, rows, rel)
    v, why = DR.c7_alignment_beyond_loss(tmp_path)
    assert v == INCONCLUSIVE and "collinear" in why
    rel["align_pre~loss_reduction"] = _rel(-0.5, -0.8, -0.1)
    _write_drift_summary(tmp_path, rows, rel)
    assert DR.c7_alignment_beyond_loss(tmp_path)[0] == SUPPORTED
