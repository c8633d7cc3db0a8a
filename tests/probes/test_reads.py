"""The front door's small-set and index-shape messages (issue 27): ``gradient_cosines(study, system, n=32)`` on a
smaller set says how many it used; ``read_residuals`` with a 1-D index names the expected shape."""

from __future__ import annotations

import warnings

import pytest
import torch

from nnsight_inoc import encode_chats, gradient_cosines, open_study, read_residuals
from tests._runs import tiny_run


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    _, run = tiny_run(tmp_path_factory.mktemp("reads"))
    return open_study(None, run, "pytest reads")


PROMPTS, ANSWERS = ["Say hi.", "Name a colour.", "Count to two."], ["Hi.", "Blue.", "One, two."]


def test_gradient_cosines_says_how_many_it_used(study):
    with pytest.warns(UserWarning, match=r"n=32 asked, but the prompts given hold\(s\) 3 examples; using all 3"):
        m = gradient_cosines(study, "", PROMPTS, ANSWERS, n=32)
    assert m.cos.shape[0] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough examples: silent
        assert gradient_cosines(study, "", PROMPTS, ANSWERS, n=2).cos.shape[0] == 2


def test_read_residuals_names_the_index_shape(study):
    batch = encode_chats(study.loaded.tokenizer, "", PROMPTS, ANSWERS)
    with pytest.raises(ValueError, match=r"shape \(batch, positions\) = \(3, P\).*got shape \(3,\).*"
                                         r"batch\.final_prompt_idx\[:, None\]"):
        read_residuals(study.tlm, batch, batch.final_prompt_idx)
    acts = read_residuals(study.tlm, batch, batch.final_prompt_idx[:, None])
    assert acts.shape == (3, 3, 1, 32) and acts.dtype == torch.float32  # the tiny model: 3 layers, d_model 32
