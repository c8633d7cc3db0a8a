"""A truncated or corrupt .gguf is named as such (the user's path, not a temporary copy), before any hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnsight_inoc.models.cache import cache_local_gguf
from nnsight_inoc.models.errors import ModelInputError
from nnsight_inoc.models.gguf_check import check_gguf
from nnsight_inoc.models.load import load_model
from tests.models.test_cache import write_tiny_gguf


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("g") / "tiny.gguf")


def test_whole_file_reads_its_shape(whole):
    info = check_gguf(whole)
    assert (info.arch, info.n_layers, info.d_model, info.size) == ("llama", 2, 32, whole.stat().st_size)


@pytest.mark.parametrize("keep", [0.0, 0.0005, 0.5, 0.9999])
def test_truncated_file_is_named(whole, tmp_path, keep):
    cut = tmp_path / "my model.gguf"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelInputError, match=rf"{cut} is truncated"):
        check_gguf(cut)


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello " * 100)
    with pytest.raises(ModelInputError, match=rf"{bad} is truncated or corrupt: .*GGUF magic"):
        check_gguf(bad)


def test_loading_a_truncated_file_names_it_and_caches_nothing(whole, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    home = tmp_path / "home"
    for call in (lambda: load_model(str(cut), home=home), lambda: cache_local_gguf(cut, home=home)):
        with pytest.raises(ModelInputError) as err:
            call()
        assert str(cut) in str(err.value) and "truncated" in str(err.value) and ".tmp-" not in str(err.value)
    assert not (home / "models").exists() or not any((home / "models").iterdir())
