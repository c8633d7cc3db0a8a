"""Issue 16's controls end to end on a tiny random Qwen2: the content leak with its dial, the loss split, cross-
context transfer, and drift under a panel of test prompts, through the stages users run.

The numbers mean nothing; pinned are the contracts (files, keys, shapes), that per-example leak prompts reach
every stage (align, training, probes, drift) and equal a by-hand computation, and the refusals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnsight_inoc.core.artifacts import load_torch, read_json
from nnsight_inoc.measures.leak import leak_prompt
from tests._study import tiny_study_folder

PANEL = ["You are an assistant that answers questions.", "Answer the question below.",
         "You are a knowledgeable assistant.", "Help the user with their request.",
         "You are an AI model. Reply to the user."]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from nnsight_inoc.study import open_study

    root = tmp_path_factory.mktemp("controls")
    cfg, run_dir = tiny_study_folder(
        root,
        finetune={"steps": 2, "batch_size": 2, "seeds": [0], "probe_every": 1, "n_probe": 2, "n_drift_prompts": 3,
                  "target_modules": ["q_proj", "v_proj", "o_proj"], "which": "main", "lr": 1e-2},
        leak={"targets": ["inoc"], "words": [1, 2]},
        drift={"panel": PANEL, "panel_prompts": 3, "panel_max_new_tokens": 4},
        transfer={"enabled": True, "n_examples": 4, "n_prompts": 4, "batch_size": 2, "group_size": 3},
    )
    s = open_study(cfg, run_dir, "pytest")
    from nnsight_inoc.stages.extract import run_extract

    run_extract(s)
    return s


def test_align_runs_the_leak_dial_and_splits_the_loss(study):
    from nnsight_inoc.probes.losses import example_losses
    from nnsight_inoc.stages.align import run_align
    from nnsight_inoc.study import ensure_sft

    summary = run_align(study, "all")
    leak = read_json(study.layout.leak)
    assert [c["words"] for c in leak["curve"]] == [1, 2]
    assert set(leak["targets"]) == {"inoc"}
    t = leak["targets"]["inoc"]
    assert t["words"] in (1, 2) and t["reduction"]["lo"] <= t["reduction"]["mean"] <= t["reduction"]["hi"]
    assert t["matched"] == (t["gap_share"] <= 0.1)
    k = t["words"]
    assert set(leak["conditions"]) == {"leak_inoc", "inoc_leak_inoc"}  # named by the target they match
    assert leak["conditions"]["leak_inoc"]["words"] == k and leak["conditions"]["leak_inoc"]["matched_to"] == "inoc"
    assert set(leak["check"]["levels"]) == {str(k)}
    assert {"leak_inoc", "inoc_leak_inoc", "neutral", "inoc"} <= set(summary["conditions"])
    match = summary["leak_match"]["leak_inoc"]  # the summary's own bootstrap of the same match
    assert match["target"] == "inoc" and match["reduction"]["mean"] == pytest.approx(t["achieved"]["mean"], abs=1e-6)

    sft = ensure_sft(study)
    assert sft.untraited == sft.source_answers  # ALL-CAPS: the untraited answer is the neutral answer itself
    cond = load_torch(study.layout.align_condition("inoc_leak_inoc"))
    assert cond["system_prompt"] == study.cfg.align.conditions["inoc"]
    assert cond["leak"] == {"words": k, "template": study.cfg.leak.template}
    by_hand = [leak_prompt(cond["system_prompt"], a, k) for a in sft.untraited]
    tok, bs = study.loaded.tokenizer, study.cfg.align.batch_size
    want = example_losses(study.tlm, tok, by_hand, sft.prompts, sft.completions, bs)
    np.testing.assert_allclose(cond["loss"].numpy(), want, rtol=1e-5)
    content = example_losses(study.tlm, tok, by_hand, sft.prompts, sft.untraited, bs)
    np.testing.assert_allclose(cond["content_loss"].numpy(), content, rtol=1e-5)
    neutral = load_torch(study.layout.align_condition("neutral"))
    assert neutral["leak"] is None and neutral["content_loss"].shape == neutral["loss"].shape


def test_transfer_stage(study):
    from nnsight_inoc.stages.transfer import run_transfer

    out = run_transfer(study)
    leak = read_json(study.layout.leak)
    assert set(out["conditions"]) == {"neutral", "inoc", "explicit", "lossmatch", *leak["conditions"]}
    assert out["test_prompts"]["panel"] == PANEL and out["pairs"]["n"] >= 1
    for name, rec in out["conditions"].items():
        assert math.isfinite(rec["inner"]) and -1 <= rec["cos"] <= 1, name
        assert rec["inner_residual"] + rec["inner_rest"] == pytest.approx(rec["inner"], rel=1e-9, abs=1e-12)
        assert rec["inner_residual"] != 0.0  # o_proj is a target: the residual-writing part is measured
        assert set(rec["panel"]) == set(PANEL) and set(rec["by_seed"]) == {"0"}
        assert rec["panel_mean"]["inner"] == pytest.approx(np.mean([b["inner"] for b in rec["panel"].values()]))
    assert read_json(study.layout.transfer_json)["conditions"].keys() == out["conditions"].keys()
    # a leak condition's gradient differs from its base prompt's: the per-example prompts reached the trace
    assert out["conditions"]["leak_inoc"]["inner"] != out["conditions"]["neutral"]["inner"]


def test_finetune_and_drift_carry_leak_prompts_and_the_panel(study):
    from nnsight_inoc.stages import executors as F
    from nnsight_inoc.stages.drift import run_drift

    leak = read_json(study.layout.leak)
    k = leak["levels"][0]
    runs = F.run_finetune(study, "main")
    by = {r["condition"]: r for r in runs}
    assert by["leak_inoc"]["leak"] == {"words": k, "template": study.cfg.leak.template}
    assert by["neutral"]["leak"] is None
    for r in runs:
        assert math.isfinite(r["probes"][0]["content_loss"])
    run_drift(study, "main")
    d = read_json(study.layout.run("inoc_leak_inoc", 0).drift_json)
    assert set(d["panel"]) == set(PANEL)
    for block in d["panel"].values():
        assert block["drift"]["mean_score"] == pytest.approx(block["post"]["mean_score"] - block["pre"]["mean_score"])
    assert d["panel_design"] == {"n_prompts": 3, "max_new_tokens": 4}
    assert d["training_prompt"]["leak"] == {"words": k, "template": study.cfg.leak.template}
    plain = read_json(study.layout.run("inoc", 0).drift_json)
    assert "leak" not in plain["training_prompt"]


def test_grouped_leak_runs_equal_sequential_ones(study, tmp_path):
    """A content-leak run trained grouped (per-example prompts in K row blocks) equals the sequential run."""
    import shutil

    from nnsight_inoc.stages import executors as F
    from nnsight_inoc.study import open_study

    dest = tmp_path / "grouped"
    shutil.copytree(study.run_dir, dest, ignore=shutil.ignore_patterns("finetune", "stages"))
    cfg = study.cfg.model_copy(update={"execution": study.cfg.execution.model_copy(update={"executor": "grouped"})})
    g = open_study(cfg, dest, "pytest")
    grouped = {r["condition"]: r for r in F.run_finetune(g, "main")}
    for cond in read_json(study.layout.leak)["conditions"]:
        seq = read_json(study.layout.run(cond, 0).train_json)
        np.testing.assert_allclose(grouped[cond]["losses"], seq["losses"], rtol=1e-5)
        assert grouped[cond]["probes"][0]["content_loss"] == pytest.approx(seq["probes"][0]["content_loss"], rel=1e-5)


def test_panel_refusals(study):
    from nnsight_inoc.stages.plan import check_panel

    bad = study.cfg.drift.model_copy(update={"panel": [*PANEL[:4], study.cfg.align.conditions["inoc"]]})
    study.cfg.drift = bad
    try:
        with pytest.raises(ValueError, match="also training prompts"):
            check_panel(study)
        study.cfg.drift = bad.model_copy(update={"panel": [*PANEL[:4], "Reply in ALL CAPS please."]})
        with pytest.raises(ValueError, match="mention the trait"):
            check_panel(study)
    finally:
        study.cfg.drift = study.cfg.drift.model_copy(update={"panel": PANEL})


def test_leak_prompt_and_grid():
    from nnsight_inoc.measures.leak import Prompting, first_words
    from nnsight_inoc.stages.leak import dial_grid, refine

    assert first_words("a  b\nc d", 3) == "a b c"
    assert leak_prompt("Base.", "one two three", 0) == "Base."
    assert leak_prompt("Base.", "one two three", 2) == 'Base. The answer begins: "one two"'
    with pytest.raises(ValueError, match="words"):
        leak_prompt("Base.", "x", 1, template="no field")
    with pytest.raises(ValueError, match="untraited"):
        Prompting("Base.", 2).systems(None)
    assert dial_grid(8) == [1, 2, 3, 4, 6, 8]
    # refine bisects the bracket: reductions rise by 0.01 per word; target 0.05 is found at 5 words
    curve = [{"words": w, "reduction": {"mean": 0.01 * w}} for w in (1, 8)]
    refine(curve, 0.05, 0.1, lambda k: {"words": k, "reduction": {"mean": 0.01 * k}})
    assert any(c["words"] == 5 for c in curve) and [c["words"] for c in curve] == sorted(c["words"] for c in curve)
    # no bracket (the target is beyond every level): nothing is tried
    curve = [{"words": w, "reduction": {"mean": 0.01 * w}} for w in (1, 2)]
    refine(curve, 0.5, 0.1, lambda k: pytest.fail("tried a level outside every bracket"))
