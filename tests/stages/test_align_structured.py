"""C1's structured null on tiny inputs: the principal components against an eigendecomposition, and every
contrast along a direction against the plain mean difference of projections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnsight_inoc.stages.align_structured import leading_pcs, structured_null, trait_free_conditions

N, L, D = 30, 3, 8
POS = ["final_prompt", "a1", "a_sum"]


def test_leading_pcs_are_the_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) * np.array([5, 3, 2, 1, 0.5, 0.1])
    pcs, ratio = leading_pcs(x, 3)
    w, vec = np.linalg.eigh(np.cov(x.T))
    order = np.argsort(w)[::-1]
    for k in range(3):
        assert abs(pcs[k] @ vec[:, order[k]]) == pytest.approx(1.0, abs=1e-9)
    assert ratio == pytest.approx(w[order[:3]] / w.sum())
    assert leading_pcs(x[:3], 10)[0].shape == (2, 6)  # capped by the rank (rows - 1)


def _cond(rng, shift: float, v: np.ndarray) -> dict:
    u = rng.normal(size=(N, D)) + shift * v
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    cos = np.zeros((N, L, len(POS)))
    cos[:, 2, 2] = u @ v
    return {"cos": torch.tensor(cos, dtype=torch.float32),
            "units": {"layer": 2, "position": "a_sum", "neg_unit": torch.tensor(u, dtype=torch.float32)}}


def test_structured_null_contrasts_are_mean_projection_differences():
    rng = np.random.default_rng(1)
    v = np.eye(D)[0]
    conds = {"neutral": _cond(rng, 0.0, v), "inoc": _cond(rng, -0.5, v), "lossmatch": _cond(rng, -0.1, v),
             "neutral_para1": _cond(rng, 0.0, v)}
    other = {"spanish": np.eye(D)[1] * 3.0}  # not unit: the block normalises it
    s = structured_null(conds, POS, 2, v, other, 200, 0)
    ua, ub = (conds[c]["units"]["neg_unit"].double().numpy() for c in ("inoc", "neutral"))
    assert s["v"]["diff_cos"] == pytest.approx(float((ua @ v).mean() - (ub @ v).mean()), abs=1e-6)
    assert s["other_traits"]["spanish"]["diff_cos"] == pytest.approx(float((ua[:, 1] - ub[:, 1]).mean()), abs=1e-9)
    assert s["other_traits"]["spanish"]["cos_with_v"] == pytest.approx(0.0)
    pcs, _ = leading_pcs(ub, 10)
    assert s["pcs"]["n"] == min(10, D) == len(s["pcs"]["directions"])
    pc3 = s["pcs"]["directions"]["pc3"]
    assert pc3["diff_cos"] == pytest.approx(float(((ua - ub) @ pcs[2]).mean()), abs=1e-9)
    assert pc3["lo"] <= pc3["diff_cos"] <= pc3["hi"]
    assert list(s["trait_free"]) == ["lossmatch", "neutral_para1"]
    lm = s["trait_free"]["lossmatch"]
    cl = conds["lossmatch"]["cos"][:, 2, 2].double().numpy()
    assert lm["shift"]["diff_cos"] == pytest.approx(float(cl.mean() - (ub @ v).mean()), abs=1e-6)
    assert lm["inoc_minus"]["diff_cos"] == pytest.approx(float((ua @ v).mean() - cl.mean()), abs=1e-6)


def test_absent_inputs_give_no_block():
    rng = np.random.default_rng(2)
    v = np.eye(D)[0]
    conds = {"neutral": _cond(rng, 0.0, v), "inoc": _cond(rng, -0.5, v)}
    s = structured_null(conds, POS, 2, None, None, 50, 0)
    assert s["other_traits"] is None and s["trait_free"] == {} and "cos_with_v" not in s["pcs"]["directions"]["pc1"]
    del conds["inoc"]["units"]
    assert structured_null(conds, POS, 2, v, None, 50, 0) is None  # measured before issue 22
    assert "error" in structured_null({"neutral": _cond(rng, 0, v), "inoc": _cond(rng, 0, v)}, POS, 1, v, None, 50, 0)
    assert trait_free_conditions(["inoc", "neutral_para2", "lossmatch", "neutral"]) == ["lossmatch", "neutral_para2"]
