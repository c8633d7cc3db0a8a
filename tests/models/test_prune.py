"""Dropping the GGUF after a verified conversion leaves a valid, reusable, checkable cache."""

from __future__ import annotations

import json

import pytest

from nnsight_inoc.core.hashing import sha256_file
from nnsight_inoc.models.cache import cache_problem, fetch
from nnsight_inoc.models.errors import ModelError
from nnsight_inoc.models.prune import drop_gguf, gguf_in_cache
from tests.models.test_cache import FAKE, fake, refuse_download, tiny_gguf  # noqa: F401 (fixtures)


def test_drop_after_fetch(fake):  # noqa: F811
    presets, downloader, home = fake
    folder = fetch(FAKE, home=home, downloader=downloader, presets=presets)
    gguf = gguf_in_cache(FAKE, home=home)
    size = gguf.stat().st_size
    assert drop_gguf(FAKE, home=home, presets=presets) == size
    assert not gguf.exists() and gguf_in_cache(FAKE, home=home) is None
    manifest = json.loads((folder / "cache.json").read_text())
    assert manifest["gguf_dropped"]["bytes"] == size and "source.gguf" not in manifest["files"]
    weights = [f for f in manifest["files"] if f.endswith(".safetensors")]
    assert manifest["weights_sha256"] == {f: sha256_file(folder / f) for f in weights}
    assert cache_problem(folder, presets[FAKE].sha256, presets[FAKE].size) is None
    assert fetch(FAKE, home=home, downloader=refuse_download, presets=presets) == folder  # reused, no download
    assert drop_gguf(FAKE, home=home, presets=presets) == 0  # twice is a no-op


def test_no_drop_from_an_invalid_cache(fake):  # noqa: F811
    presets, downloader, home = fake
    folder = fetch(FAKE, home=home, downloader=downloader, presets=presets)
    (folder / "config.json").write_text("{}")  # size now differs from the manifest
    with pytest.raises(ModelError, match="not valid .*nothing was dropped"):
        drop_gguf(FAKE, home=home, presets=presets)
    assert (folder / "source.gguf").exists()
