"""Issue 22's summary blocks on synthetic condition files: beyond_leak's contrasts equal a plain recomputation
on the examples measured beyond the quote, leak_shift pairs each leak condition with its base, and conditions
measured beyond different quotes are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnsight_inoc.stages.align_beyond import base_condition, beyond_leak, leak_shift
from nnsight_inoc.stages.align_summary import _ci_block, position_contrast
from nnsight_inoc.stats.nulls import random_unit_directions

N, L, D, K = 20, 3, 8, 2
POS = ["final_prompt", "a1", "a2", "a_sum"]
ROWS = [i for i in range(N) if i % 5]  # every fifth example is too short beyond the quote


def _cond(rng, name: str, prompt: str, words: int | None, shift: float) -> dict:
    m = len(ROWS)
    c = {"condition": name, "ids": [f"e{i}" for i in range(N)], "system_prompt": prompt,
         "leak": None if words is None else {"words": words, "template": "{words}"},
         "cos": torch.tensor(rng.normal(0.1 + shift, 0.02, size=(N, L, len(POS))), dtype=torch.float32),
         "beyond": {"words": 6, "positions": ["b1", "b2", "b_sum"], "rows": torch.tensor(ROWS),
                    "excluded": [f"e{i}" for i in range(N) if i not in ROWS], "method": "m",
                    "cos": torch.tensor(rng.normal(0.05 + shift / 4, 0.02, size=(m, L, K + 1)), dtype=torch.float32),
                    "norm": torch.tensor(np.exp(rng.normal(size=(m, L, K + 1))), dtype=torch.float32),
                    "mean_unit_neg_grad": torch.tensor(rng.normal(size=(L, K + 1, D)) / 5, dtype=torch.float32)}}
    return c


@pytest.fixture(scope="module")
def conds():
    rng = np.random.default_rng(0)
    return {"neutral": _cond(rng, "neutral", "N", None, 0.0), "inoc": _cond(rng, "inoc", "I", None, -0.01),
            "leak_inoc": _cond(rng, "leak_inoc", "N", 6, 0.016), "inoc_leak_inoc": _cond(rng, "inoc_leak_inoc", "I", 3,
                                                                                            0.01)}


def test_beyond_contrasts_equal_a_plain_recomputation(conds):
    dirs = random_unit_directions(D, 30, rng=0)
    pairs = [("inoc", "neutral"), ("inoc", "leak_inoc")]
    out = beyond_leak(conds, pairs, dirs, 100, 0, position_contrast, _ci_block)
    assert out["words"] == 6 and out["n_examples"] == len(ROWS) and out["n_excluded"] == N - len(ROWS)
    assert out["excluded_ids"] == ["e0", "e5", "e10", "e15"] and out["positions"] == ["b1", "b2", "b_sum"]
    blk = out["contrasts"]["inoc-leak_inoc"]["b_sum"]
    a, b = conds["inoc"]["beyond"], conds["leak_inoc"]["beyond"]
    want = (a["cos"][:, :, 2].double() - b["cos"][:, :, 2].double()).mean(0).numpy()
    np.testing.assert_allclose(blk["diff_cos"], want, atol=1e-7)
    D_ = (a["mean_unit_neg_grad"] - b["mean_unit_neg_grad"]).double().numpy()[:, 2]
    np.testing.assert_allclose(blk["null_sd"], np.linalg.norm(D_, axis=-1) / np.sqrt(D))
    assert out["conditions"]["neutral"]["cos"]["b1"]["mean"] == pytest.approx(
        conds["neutral"]["beyond"]["cos"][:, :, 0].double().mean(0).numpy().tolist(), abs=1e-7)


def test_mismatched_quotes_are_refused_and_old_files_give_nothing(conds):
    other = {n: dict(c) for n, c in conds.items()}
    other["inoc"] = {**conds["inoc"], "beyond": {**conds["inoc"]["beyond"], "words": 3}}
    out = beyond_leak(other, [], np.zeros((1, D)), 50, 0, position_contrast, _ci_block)
    assert "different quotes" in out["error"]
    old = {n: {k: v for k, v in c.items() if k != "beyond"} for n, c in conds.items()}
    assert beyond_leak(old, [], np.zeros((1, D)), 50, 0, position_contrast, _ci_block) is None
    assert "beyond" not in leak_shift(old, POS, None, 50, 0)["conditions"]["leak_inoc"]


def test_leak_shift_against_its_base(conds):
    out = leak_shift(conds, POS, None, 100, 0)
    rec = out["conditions"]["leak_inoc"]
    assert rec["base"] == "neutral" and rec["words"] == 6 and out["conditions"]["inoc_leak_inoc"]["base"] == "inoc"
    j = POS.index("a_sum")
    want = (conds["leak_inoc"]["cos"][:, :, j].double() - conds["neutral"]["cos"][:, :, j].double()).mean(0)
    np.testing.assert_allclose(rec["quoted"]["a_sum"]["diff_cos"], want.numpy(), atol=1e-7)
    assert set(rec["quoted"]) == {"a1", "a2", "a_sum"} and set(rec["beyond"]) == {"b1", "b2", "b_sum"}
    same = (conds["leak_inoc"]["cos"][ROWS, :, j].double() - conds["neutral"]["cos"][ROWS, :, j].double()).mean(0)
    np.testing.assert_allclose(rec["quoted_same_examples"]["a_sum"]["diff_cos"], same.numpy(), atol=1e-7)
    leak = {"conditions": {"leak_inoc": {"base_condition": "inoc"}}}
    assert base_condition("leak_inoc", conds, leak) == "inoc"  # leak.json's factorial wins when given
