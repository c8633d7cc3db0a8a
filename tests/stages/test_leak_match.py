"""The leak dial matched on the whole SFT set (``leak.match_examples = "all"``, issue 23) and forward-only loss
passes batched by ``execution.loss_batch_size``: what changes and what must not."""

from __future__ import annotations

import pytest

from nnsight_inoc.core import layout as L
from nnsight_inoc.core.config import from_dict
from nnsight_inoc.data.splits import Splits, save_splits
from tests._study import _prompts, tiny_study_folder


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from nnsight_inoc.stages.extract import run_extract
    from nnsight_inoc.study import open_study

    root = tmp_path_factory.mktemp("leak_match")
    cfg, run_dir = tiny_study_folder(root, leak={"targets": ["inoc"], "words": [1, 3], "match_examples": "all"},
                                     execution={"loss_batch_size": 5})
    # 14 SFT prompts, more than align.lossmatch_examples (10), so that "all" differs from the first 10
    splits = Splits(_prompts("dir", 8), _prompts("held", 8), _prompts("sft", 14), _prompts("eval", 6), card={})
    splits.card = {"sha256": splits.sha256()}
    save_splits(splits, run_dir / L.DATA_DIR)
    cfg = from_dict({**cfg.model_dump(), "data": {**cfg.data.model_dump(), "n_sft": 14}}, source="test")
    s = open_study(cfg, run_dir, "pytest")
    run_extract(s)
    return s


def test_the_dial_matches_on_every_sft_example_and_its_losses_do_not_depend_on_the_batch(study):
    from nnsight_inoc.measures.leak import Prompting
    from nnsight_inoc.probes.losses import example_losses
    from nnsight_inoc.stages.leak import select_leak
    from nnsight_inoc.study import ensure_sft

    sft = ensure_sft(study)
    assert len(sft.prompts) > study.cfg.align.lossmatch_examples  # else "all" could not differ
    rec = select_leak(study, sft)
    assert rec["n_examples"] == rec["key"]["n_examples"] == len(sft.prompts)
    assert study.cfg.loss_batch_size == 5 != study.cfg.align.batch_size
    neutral_prompt = study.cfg.align.conditions["neutral"]
    tok = study.loaded.tokenizer

    def one_by_one(system):  # batch size 1: no padding at all, the simple reference
        return example_losses(study.tlm, tok, system, sft.prompts, sft.completions, 1)

    neutral = one_by_one(neutral_prompt)
    assert rec["neutral_mean_loss"] == pytest.approx(float(neutral.mean()), rel=1e-5)
    for point in rec["curve"]:
        leak = Prompting(neutral_prompt, point["words"], study.cfg.leak.template).systems(sft.untraited)
        want = float((neutral - one_by_one(leak)).mean())
        assert point["reduction"]["mean"] == pytest.approx(want, abs=1e-5)


def test_a_folder_refuses_another_match_once_its_data_exist(study):
    from nnsight_inoc.core.runconfig import ConfigConflict
    from nnsight_inoc.study import open_study

    cfg = from_dict({**study.cfg.model_dump(), "leak": {**study.cfg.leak.model_dump(),
                                                         "match_examples": "lossmatch_examples"}}, source="test")
    with pytest.raises(ConfigConflict, match="leak.match_examples"):
        open_study(cfg, study.layout.root, "pytest")


def test_config_refuses_an_unknown_match():
    with pytest.raises(Exception, match="match_examples"):
        from_dict({"leak": {"match_examples": "half"}}, source="test")
    assert from_dict({}, source="t").loss_batch_size == from_dict({}, source="t").align.batch_size
