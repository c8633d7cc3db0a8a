"""A device this machine lacks is refused before anything loads, naming it and what exists."""

from __future__ import annotations

import pytest
import torch

from nnsight_inoc.core.errors import UsageProblem
from nnsight_inoc.models.device import check_device
from nnsight_inoc.models.errors import ModelInputError


def test_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for dev in ("cuda", "cuda:0"):
        with pytest.raises(ModelInputError, match=rf"model.device = '{dev}', but this machine has no CUDA device"):
            check_device(dev)
    check_device("cpu")
    check_device("auto")


def test_cuda_index_beyond_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(ModelInputError, match=r"'cuda:2', but this machine has 2 CUDA device\(s\): cuda:0 to cuda:1"):
        check_device("cuda:2")


def test_not_a_device():
    with pytest.raises(ModelInputError, match="'tpu' is not a device; use auto, cpu, cuda or cuda:N"):
        check_device("tpu")
    assert issubclass(ModelInputError, UsageProblem)
