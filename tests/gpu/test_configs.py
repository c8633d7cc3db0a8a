"""Every GPU config in ``gpu/`` loads under today's schema: a typo there would otherwise surface only after the
model's pieces have been sent to the device machine (minutes of device time)."""

from __future__ import annotations

import pytest

from nnsight_inoc.core.config import load_config
from tests._paths import ROOT

CONFIGS = sorted((ROOT / "gpu").glob("*.toml"))


def test_there_are_gpu_configs():
    assert len(CONFIGS) >= 4, CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_gpu_config_loads(path):
    cfg = load_config(path)
    assert cfg.model.name == "qwen2.5-coder-1.5b-instruct"  # the study model, which gpu/README.md sends in pieces
