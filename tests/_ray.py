"""Ray in the tests: skip without it, except in CI (``NNSIGHT_INOC_REQUIRE_RAY=1``), where a missing Ray fails."""

from __future__ import annotations

import os

import pytest

from nnsight_inoc.cluster.ray_env import ray_missing


def require_ray() -> None:
    """Skip (or, with NNSIGHT_INOC_REQUIRE_RAY=1, fail) the calling test when Ray is not importable."""
    why = ray_missing()
    if why:
        (pytest.fail if os.environ.get("NNSIGHT_INOC_REQUIRE_RAY") == "1" else pytest.skip)(why)
