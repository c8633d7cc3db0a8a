"""Which control the loss-matched comparison uses, how per-example prompts read, and control C from rows.csv.gz."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest

from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.report import controls as C
from nnsight_inoc.report.control_c import at_layer, example_level_at, from_rows_table
from nnsight_inoc.report.verdicts import INCONCLUSIVE, SUPPORTED, Verdict, cap, control_of, loss_gap_share
from tests._paths import ROOT


def test_control_naming_and_choice() -> None:
    assert C.leak_condition("inoc") == "leak_inoc" and C.leak_target("leak_inoc_para2") == "inoc_para2"
    assert C.leak_target("lossmatch") is None and C.leak_target("leak_") is None
    assert C.matched_control(["neutral", "inoc", "lossmatch", "leak_inoc"]) == "leak_inoc"
    assert C.matched_control(["neutral", "inoc", "lossmatch"]) == "lossmatch"
    assert C.matched_control(["neutral", "inoc"]) is None
    align = {"contrasts": {"inoc-neutral": {"loss": {"diff": -0.03}}, "inoc-lossmatch": {"loss": {"diff": -0.015}},
                           "inoc-leak_inoc": {"loss": {"diff": 0.003}}}}
    assert control_of(align) == "leak_inoc" and loss_gap_share(align) == pytest.approx(0.1)
    assert loss_gap_share(align, "lossmatch") == pytest.approx(0.5)


def test_prompts_one_string_or_per_example() -> None:
    assert C.describe_prompt("Be brief.") == '"Be brief."'
    many = ["You are a helpful assistant. 'A'", "You are a helpful assistant. 'B'"]
    assert C.describe_prompt(many).startswith("per-example (2 prompts, 2 distinct; first")
    compact = C.compact_prompt(many, {"system_prompt_template": "... '{k words}'"})
    assert compact["system_prompt"] == many[0] and compact["per_example_prompts"]["n"] == 2
    assert "template" in C.prompt_label(compact) and C.prompt_label({"system_prompt": "x"}) == '"x"'
    assert C.prompt_label({**compact, "per_example_prompts": {**compact["per_example_prompts"], "template": float("nan")}}
                          ).endswith(f'first "{many[0]}")')
    with pytest.raises(ValueError, match="system prompt"):
        C.describe_prompt([])


def test_cap_states_the_uncapped_verdict() -> None:
    v = cap(Verdict(SUPPORTED, "numbers"), True, "loss match incomplete", "loss gap 49%")
    assert v.label == INCONCLUSIVE and "uncapped: supported: numbers" in v.reason and v.shortfall == ("loss gap 49%",)
    label, reason = v  # unpacks as before
    assert (label, v[1]) == (INCONCLUSIVE, reason)
    assert cap(("not supported", "x"), False, "why") == Verdict("not supported", "x")
    again = cap(Verdict(INCONCLUSIVE, "few prompts", ("prompts: 4",)), True, "collinear")
    assert "inconclusive before the cap too" in again.reason and again.shortfall == ("prompts: 4", "collinear")
    with pytest.raises(ValueError, match="label"):
        Verdict("maybe", "")


def test_control_c_from_the_rows_table_equals_the_arrays(tmp_path) -> None:
    """Written as the align stage writes rows.csv.gz, read back: the same fit as on the arrays themselves."""
    rng = np.random.default_rng(0)
    n, conds = 30, ("neutral", "inoc", "lossmatch")
    data = {c: {"cos": rng.normal(0.1, 0.02, n), "loss": rng.normal(1.0, 0.2, n), "norm": np.exp(rng.normal(size=n))}
            for c in conds}
    layout = RunLayout(tmp_path)
    layout.align_dir.mkdir()
    with gzip.open(layout.align_rows, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["example_id", "condition", "layer", "position", "proj_neg_g_v", "grad_norm", "cos_neg_g_v", "loss"])
        for c in conds:
            for i in range(n):
                for pos in ("a_sum", "final_prompt", "a1"):
                    d = data[c]
                    w.writerow([f"e{i}", c, 3, pos, 0.0, f"{d['norm'][i]:.17g}", f"{d['cos'][i]:.17g}",
                                f"{d['loss'][i]:.17g}"])
    got = at_layer(from_rows_table(layout, 3, n_boot=100, seed=0), "a_sum", 3)
    ref = example_level_at({c: data[c]["cos"] for c in conds}, {c: data[c]["loss"] for c in conds},
                           {c: data[c]["norm"] for c in conds}, 100, 3)
    for c in ("inoc", "lossmatch"):
        assert got["primary"]["intercept"][c]["est"] == pytest.approx(ref["primary"]["intercept"][c]["est"])
        assert got["mediator"]["intercept"][c]["lo"] == pytest.approx(ref["mediator"]["intercept"][c]["lo"])
    assert at_layer({"by_position": {}}, "a_sum", 3) is None


def test_control_c_on_the_published_rows_is_computable() -> None:
    block = from_rows_table(RunLayout(ROOT / "results" / "politeness"), 25, n_boot=50, seed=0, positions=("a_sum",))
    prim = block["by_position"]["a_sum"]["25"]["primary"]
    assert set(prim["intercept"]) == {"explicit", "inoc", "lossmatch"} and prim["n_examples"] > 100
