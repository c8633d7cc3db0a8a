"""The align summary on synthetic condition files: the loss split, the content-leak match, per-example prompts,
control C per example and the contrasts, each against a plain recomputation from the same tensors."""

from __future__ import annotations

import csv
import gzip
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.stages.align_summary import contrast_pairs, summarise

N, L, D = 40, 4, 16
POSITIONS = ["final_prompt", "a1", "a2", "a3", "a_sum"]
LOSS_SHIFT = {"neutral": 0.0, "inoc": -0.03, "lossmatch": -0.015, "explicit": -0.3, "leak_inoc": -0.031}


def _blob(name: str, rng: np.random.Generator, base_loss: np.ndarray, base_cos: np.ndarray) -> dict:
    loss = base_loss + LOSS_SHIFT[name] + 0.01 * rng.normal(size=N)
    content = base_loss - 0.5 + (0.5 * LOSS_SHIFT[name] if name != "leak_inoc" else -0.05) + 0.01 * rng.normal(size=N)
    cos = base_cos + (-0.01 if name in ("inoc", "explicit") else 0.0) + 0.002 * rng.normal(size=(N, L, len(POSITIONS)))
    system = ([f"You are a helpful assistant. The answer starts: 'w{i}'" for i in range(N)] if name == "leak_inoc"
              else f"prompt of {name}")
    blob = {"condition": name, "system_prompt": system, "ids": [f"ex{i}" for i in range(N)],
            "positions": POSITIONS, "cos": torch.tensor(cos, dtype=torch.float32),
            "proj": torch.tensor(cos * 3, dtype=torch.float32),
            "norm": torch.tensor(np.exp(rng.normal(size=(N, L, len(POSITIONS)))), dtype=torch.float32),
            "loss": torch.tensor(loss, dtype=torch.float32), "content_loss": torch.tensor(content, dtype=torch.float32),
            "mean_unit_neg_grad": torch.tensor(rng.normal(size=(L, len(POSITIONS), D)) / 4, dtype=torch.float32),
            "direction_position": "final_prompt", "layer": L - 1}
    if name == "leak_inoc":
        blob["leak"] = {"target": "inoc", "dial": 10, "unit": "words"}
        blob["system_prompt_template"] = "You are a helpful assistant. The answer starts: '{first k words}'"
    return blob


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, RunLayout]:
    root = tmp_path_factory.mktemp("align")
    layout = RunLayout(root)
    rng = np.random.default_rng(0)
    base_loss = rng.normal(1.2, 0.3, size=N)
    base_cos = rng.normal(0.1, 0.03, size=(N, L, len(POSITIONS)))
    blobs = {c: _blob(c, rng, base_loss, base_cos) for c in LOSS_SHIFT}
    for c, b in blobs.items():
        A.save_torch(layout.align_condition(c), b)
    stages: list = []
    study = SimpleNamespace(cfg=SimpleNamespace(align=SimpleNamespace(n_bootstrap=200, n_random=50), seed=0),
                            layout=layout, tlm=SimpleNamespace(d_model=D),
                            prov=SimpleNamespace(stage=lambda *a, **k: stages.append(a)))
    return summarise(study), blobs, layout


def test_per_example_prompts_are_summarised_not_copied(summary):
    s, blobs, _ = summary
    leak = s["conditions"]["leak_inoc"]
    assert leak["system_prompt"] == blobs["leak_inoc"]["system_prompt"][0]
    assert leak["per_example_prompts"] == {"n": N, "n_distinct": N,
                                           "template": blobs["leak_inoc"]["system_prompt_template"]}
    assert "per_example_prompts" not in s["conditions"]["inoc"] and leak["leak"]["dial"] == 10


def test_contrasts_include_the_leak_control():
    assert contrast_pairs(["neutral", "inoc", "lossmatch", "leak_inoc"]) == [
        ("inoc", "neutral"), ("inoc", "lossmatch"), ("lossmatch", "neutral"), ("inoc", "leak_inoc"),
        ("leak_inoc", "neutral")]
    assert contrast_pairs(["neutral", "inoc"]) == [("inoc", "neutral")]


def test_loss_split_is_the_paired_mean_of_each_part(summary):
    s, blobs, _ = summary
    n = blobs["neutral"]
    for c in ("inoc", "explicit", "leak_inoc"):
        b = blobs[c]
        total = (n["loss"] - b["loss"]).double().mean().item()
        content = (n["content_loss"] - b["content_loss"]).double().mean().item()
        blk = s["loss_split"]["conditions"][c]
        assert blk["total"]["mean"] == pytest.approx(total, abs=1e-6)
        assert blk["content"]["mean"] == pytest.approx(content, abs=1e-6)
        assert blk["trait"]["mean"] == pytest.approx(total - content, abs=1e-6)
        assert blk["trait"]["lo"] <= blk["trait"]["mean"] <= blk["trait"]["hi"]
    assert "neutral" not in s["loss_split"]["conditions"]


def test_leak_match_against_its_target(summary):
    s, blobs, _ = summary
    m = s["leak_match"]["leak_inoc"]
    ln = blobs["neutral"]["loss"].double()
    r_leak = (ln - blobs["leak_inoc"]["loss"].double()).mean().item()
    r_inoc = (ln - blobs["inoc"]["loss"].double()).mean().item()
    assert m["target"] == "inoc" and m["dial"] == {"target": "inoc", "dial": 10, "unit": "words"}
    assert m["reduction"]["mean"] == pytest.approx(r_leak) and m["target_reduction"]["mean"] == pytest.approx(r_inoc)
    assert m["gap_share"]["mean"] == pytest.approx((r_leak - r_inoc) / r_inoc)
    assert m["matched"] == (abs((r_leak - r_inoc) / r_inoc) <= 0.10)
    assert m["gap_share"]["lo"] <= m["gap_share"]["mean"] <= m["gap_share"]["hi"]


def test_control_c_per_example_equals_least_squares(summary):
    s, blobs, _ = summary
    j, layer = POSITIONS.index("a_sum"), 2
    others = sorted(c for c in LOSS_SHIFT if c != "neutral")  # the summary lists conditions in file order
    pair = s["example_regression"]["by_position"]["a_sum"][str(layer)]
    dcos = np.concatenate([blobs[c]["cos"][:, layer, j].double().numpy() - blobs["neutral"]["cos"][:, layer, j].double()
                           .numpy() for c in others])
    dloss = np.concatenate([blobs[c]["loss"].double().numpy() - blobs["neutral"]["loss"].double().numpy()
                            for c in others])
    X = np.column_stack([np.repeat(np.eye(len(others)), N, axis=0), dloss])
    ref = np.linalg.lstsq(X, dcos, rcond=None)[0]
    for k, c in enumerate(others):
        assert pair["primary"]["intercept"][c]["est"] == pytest.approx(ref[k], abs=1e-9)
    assert pair["primary"]["slope"]["est"] == pytest.approx(ref[-1], abs=1e-9)
    assert "mediator" in pair["mediator"]["model"]
    assert set(s["example_regression"]["by_position"]) == {"a_sum", "final_prompt"}
    assert len(s["example_regression"]["by_position"]["final_prompt"]) == L


def test_legacy_regression_keeps_its_four_conditions_and_rows_gain_content_loss(summary):
    s, _, layout = summary
    assert sorted(s["regression_conditions"]) == ["explicit", "inoc", "lossmatch", "neutral"]
    assert len(s["regression"]["a_sum/inoc_vs_neutral"]) == L
    with gzip.open(layout.align_rows, "rt") as fh:
        header = next(csv.reader(fh))
    assert header[-1] == "content_loss"
    assert (layout.align_dir / "null_inoc_minus_leak_inoc_a_sum.png").is_file()


def test_the_report_reads_the_new_blocks_as_loaded(summary):
    """The report reads summaries with JSON null as NaN: the new sections and C4 must take that."""
    from types import SimpleNamespace

    from nnsight_inoc.report import alignment_rules as R
    from nnsight_inoc.report.load import _nulls_to_nan
    from nnsight_inoc.report.loss_sections import section_control_c, section_leak_match, section_loss_split

    s, _, layout = summary
    align = _nulls_to_nan(A.read_json(layout.align_summary))
    run = SimpleNamespace(align=align, example=align["example_regression"])
    blocks = section_loss_split(run) + section_leak_match(run) + section_control_c(run)
    text = repr(blocks)
    assert "leak_inoc" in text and "change in log |g| (per SD)" in text and "nan" not in text.replace("n/a", "")
    v = R.c4_regression(align, run.example)
    assert v.label in ("supported", "not supported") and f"layer {L - 1}, a_sum" in v.reason
