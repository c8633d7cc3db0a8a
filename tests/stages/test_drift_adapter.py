"""Drift's projection reads the adapted model's residual stream (issue 27), and a mode change of the wrapped model no
longer takes nnsight's controllers away.

The drift stage attaches the runs' adapters to the study's own base model as K row blocks and reads the residual
stream through the study's nnsight envoy (``stages/drift.py`` ``drift_group``). Here slot 0 is a zero adapter
(B = 0, as LoRA at init) and slot 1 a non-zero one: post - pre must be 0 for slot 0 and not for slot 1.

The warning "'model.base_model.model.model.norm': `forward` was replaced after nnsight wrapped this module" came
from transformers' hub kernels: with the ``kernels`` package installed a model loads with ``use_kernels=True``, and
``.train()`` re-kernelizes, popping the instance ``forward`` of every RMSNorm and SiLU module, which is where
nnsight keeps its controller. ``models/load.py`` now loads with ``use_kernels=False``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from nnsight_inoc.measures.drift import drift
from nnsight_inoc.stages.drift import measure
from nnsight_inoc.study import open_study
from nnsight_inoc.trace.merged import Measurement
from nnsight_inoc.trace.tracing import wrap
from nnsight_inoc.train.grouped import fresh
from tests._runs import tiny_run

SYSTEM = "You are a helpful assistant."
PROMPTS = ["Write about the sea.", "Name a colour.", "Describe a dog."]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    _, run = tiny_run(tmp_path_factory.mktemp("drift_adapter"))
    return open_study(None, run, "pytest drift adapter")


def _replaced(caught) -> list[str]:
    return [str(w.message) for w in caught if "was replaced after nnsight wrapped" in str(w.message)]


def test_mode_change_keeps_nnsight_controllers(study):
    base = study.loaded.hf_model
    assert not base.use_kernels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base.train()
        base.eval()
        wrap(base)  # a second envoy over the same modules: it finds every controller where nnsight put it
    assert not _replaced(caught)


def test_drift_projection_reads_the_adapted_residual_stream(study):
    base = study.loaded.hf_model
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(study.tlm.n_layers, study.tlm.d_model, generator=g), dim=-1)
    torch.manual_seed(0)
    lora = fresh(base, k=2, r=2, alpha=4.0, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():
        for b in lora.B:
            b[1].normal_(0.0, 0.5, generator=g)  # slot 1 trained; slot 0 stays zero (LoRA's B at init)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokens = study.cfg.extract.max_new_tokens
        pre = measure(study, [Measurement([SYSTEM], PROMPTS, tokens)], v).results[0][0]
        with lora.attached(base, None):
            post = measure(study, [Measurement([SYSTEM, SYSTEM], PROMPTS, tokens)], v).results[0]
    assert not _replaced(caught)
    zero, trained = drift(pre, post[0])["projection"], drift(pre, post[1])["projection"]
    assert zero == pytest.approx([0.0] * len(zero), abs=1e-4)
    assert max(abs(x) for x in trained) > 1e-2  # the adapter moved the residual stream the projection reads
