"""Issue 22 through the real extract and align stages on a tiny random Qwen2 with the content-leak factorial:
every condition is read beyond the longest quote at the same tokens of the same examples, the short ones are
excluded and named, the blocks reach the summary, and the old positions are what they were without the leak."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from nnsight_inoc.core.artifacts import load_torch, read_json, write_json
from tests._study import tiny_study_folder

ANSWERS = ["the sea is wide and blue today", "a fox runs in the green field", "tests help us find bugs early on",
           "this poem is about the quiet night", "bicycles have two wheels and a seat", "France is a country in Europe",
           "cook the rice for ten minutes please", "the world is round and large", "dogs like to play outside a lot",
           "ok fine"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    from nnsight_inoc.stages.align import run_align
    from nnsight_inoc.stages.extract import run_extract
    from nnsight_inoc.study import open_study, sft_key

    t0 = time.time()
    cfg, run_dir = tiny_study_folder(tmp_path_factory.mktemp("i22"), leak={"targets": ["inoc"], "words": [1, 2],
                                                                        "extra_words": [3]},
                                     data={"n_direction": 16, "n_sft": 10, "n_eval": 6, "sft_max_new_tokens": 8})
    study = open_study(cfg, run_dir, "pytest")
    # The tiny model's own answers have hardly any spaces; these have words to quote and tokens beyond them
    # (the last one is too short: it must be excluded, for every condition).
    write_json(study.layout.sft_completions, {"key": sft_key(study), "ids": [p.id for p in study.splits.sft],
                                              "prompts": [p.text for p in study.splits.sft], "source_answers": ANSWERS})
    run_extract(study)
    summary = run_align(study, "all")
    return study, summary, time.time() - t0


def test_every_condition_is_read_beyond_the_longest_quote(done):
    from nnsight_inoc.stages.leak import longest_quote
    from nnsight_inoc.study import ensure_sft
    from nnsight_inoc.trace.chat import quoted_token_count

    study, summary, seconds = done
    leak = read_json(study.layout.leak)
    W = max(c["words"] for c in leak["conditions"].values())
    assert W == 3 == longest_quote(study)  # the extra level is the longest quote
    sft = ensure_sft(study)
    tok, k = study.loaded.tokenizer, study.cfg.align.n_assistant_tokens
    want_rows = [i for i, c in enumerate(sft.completions)
                 if quoted_token_count(tok, c, W) + k <= len(tok(c, add_special_tokens=False)["input_ids"])]
    blobs = {p.stem[len("cond_"):]: load_torch(p) for p in study.layout.align_conditions()}
    assert {"neutral", "inoc", "leak_inoc", "inoc_leak_inoc", "leak_w3", "inoc_leak_w3"} <= set(blobs)
    for name, b in blobs.items():
        assert b["beyond"]["words"] == W and b["beyond"]["rows"].tolist() == want_rows, name
        assert b["beyond"]["positions"] == [f"b{i + 1}" for i in range(k)] + ["b_sum"]
        assert b["beyond"]["excluded"] == [sft.ids[i] for i in range(len(sft.ids)) if i not in want_rows]
        assert b["units"]["neg_unit"].shape == (len(sft.ids), study.tlm.d_model)
    bl = summary["beyond_leak"]
    assert "error" not in bl, (bl, want_rows, sft.completions)
    assert bl["words"] == W and bl["n_examples"] == len(want_rows)
    assert bl["n_excluded"] == len(sft.ids) - len(want_rows) and bl["excluded_ids"] == blobs["neutral"]["beyond"]["excluded"]
    assert set(bl["contrasts"]) == set(summary["contrasts"])
    blk = bl["contrasts"]["inoc-leak_inoc"]["b_sum"]
    layer = summary["layer"]
    j = -1
    diff = (blobs["inoc"]["beyond"]["cos"][:, layer, j].double() - blobs["leak_inoc"]["beyond"]["cos"][:, layer, j]
            .double()).mean().item()
    assert blk["diff_cos"][layer] == pytest.approx(diff, abs=1e-6) and len(blk["null_p_exact"]) == study.tlm.n_layers


def test_leak_shift_against_each_base(done):
    _, summary, _ = done
    shift = summary["leak_shift"]["conditions"]
    assert shift["leak_inoc"]["base"] == "neutral" and shift["inoc_leak_w3"]["base"] == "inoc"
    for rec in shift.values():
        assert set(rec["quoted"]) == {"a1", "a2", "a3", "a_sum"} and set(rec["beyond"]) == {"b1", "b2", "b3", "b_sum"}
        b = rec["beyond"]["b_sum"]
        assert all(lo <= d <= hi for d, lo, hi in zip(b["diff_cos"], b["lo"], b["hi"]))


def test_structured_null_block(done):
    study, summary, _ = done
    s = summary["structured_null"]
    assert s["contrast"] == "inoc-neutral" and s["layer"] == summary["layer"] and s["position"] == "a_sum"
    assert set(s["other_traits"]) == {"spanish", "politeness"}  # the tiny study's trait is allcaps
    assert s["pcs"]["n"] == min(10, len(read_json(study.layout.leak)["conditions"]) and 9)
    c = summary["contrasts"]["inoc-neutral"]["a_sum"]
    assert s["v"]["diff_cos"] == pytest.approx(c["diff_cos"][summary["layer"]], abs=1e-6)
    assert set(s["trait_free"]) == {"lossmatch"}
    lm = summary["contrasts"]["lossmatch-neutral"]["a_sum"]
    assert s["trait_free"]["lossmatch"]["shift"]["diff_cos"] == pytest.approx(lm["diff_cos"][summary["layer"]],
                                                                              abs=1e-6)


def test_other_trait_direction_is_built_as_extract_builds_v(done):
    """The study's own trait through the other-trait path gives extract's v at final_prompt (up to padding
    round-off): the same prompts, position and mean difference."""
    from nnsight_inoc.stages.other_traits import trait_direction
    from nnsight_inoc.study import load_directions

    study, _, _ = done
    v, meta = load_directions(study)
    mine = trait_direction(study, study.trait, "final_prompt")
    torch.testing.assert_close(mine, v[:, 0], atol=1e-5, rtol=1e-4)
    other = load_torch(study.layout.other_directions)
    assert set(other["v"]) == {"spanish", "politeness"} and other["position"] == "final_prompt"
    assert np.allclose([float(x.norm(dim=-1).max()) for x in other["v"].values()], 1.0)


def test_the_report_reads_the_new_blocks_as_loaded(done):
    """As the report loads the summary (JSON null as NaN): C1, C2 and the new sections read the real blocks."""
    from nnsight_inoc.report import alignment_rules as R
    from nnsight_inoc.report.leak_sections import section_leak_shift, section_structured_null
    from nnsight_inoc.report.load import _nulls_to_nan

    study, _, _ = done
    align = _nulls_to_nan(read_json(study.layout.align_summary))
    c2 = R.c2_beyond_lossmatch(align)
    assert "b_sum" in c2.reason and "inside the quote" in c2.reason
    c1 = R.c1_rotation(align)
    assert "structured null at layer" in c1.reason
    text = repr(section_leak_shift(align) + section_structured_null(align))
    assert "leak_w3" in text and "trait spanish" in text and "neutral-gradient PC1" in text
