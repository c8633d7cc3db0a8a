"""Every published run folder's ``config.toml`` loads under today's schema, so that the commands in its README, which
take the folder's config as their default (issue 18 A1), still run on it."""

from __future__ import annotations

import pytest

from nnsight_inoc.core.config import load_config
from tests._paths import ROOT

PUBLISHED = sorted(p.parent for p in (ROOT / "results").glob("*/config.toml"))


def test_there_are_published_configs():
    assert len(PUBLISHED) >= 3, PUBLISHED


@pytest.mark.parametrize("run_dir", PUBLISHED, ids=lambda p: p.name)
def test_published_config_loads(run_dir):
    cfg = load_config(run_dir / "config.toml")
    assert cfg.model.name  # a resolved config names its model
