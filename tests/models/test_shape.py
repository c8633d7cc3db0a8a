"""The model's shape from its config alone: what a config is checked against before any weights load."""

from __future__ import annotations

import pytest

from nnsight_inoc.core.config import ConfigError, from_dict
from nnsight_inoc.models.cache import PRESETS
from nnsight_inoc.models.shape import ModelShape, check_fits, read_shape
from tests._tiny import save_tiny_checkpoint
from tests.models.test_cache import write_tiny_gguf


def _dims(shape: ModelShape | None) -> tuple[int, int] | None:
    return None if shape is None else (shape.n_layers, shape.d_model)


def test_shapes_of_every_source(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "tiny", num_layers=3, hidden_size=32)
    assert _dims(read_shape(folder)) == (3, 32)
    from_gguf = read_shape(str(write_tiny_gguf(tmp_path / "t.gguf")))
    assert _dims(from_gguf) == (2, 32) and from_gguf.max_positions == 128
    home = tmp_path / "home"  # nothing cached: the preset table
    assert _dims(read_shape("qwen2.5-coder-1.5b-instruct", home=home)) == (28, 1536)
    assert _dims(read_shape("smollm2-135m-instruct", home=home)) == (30, 576)
    assert all(p.n_layers and str(p.n_layers) + "L" in p.arch for p in PRESETS.values())
    assert read_shape("org/some-hub-model") is None  # needs the network: checked after loading


def test_steering_layers_out_of_range_are_named():
    cfg = from_dict({"steering": {"layer_sets": [[14], [10, 99]]}})
    with pytest.raises(ConfigError, match=r"steering.layer_sets .*layer\(s\) \[99\] out of range.*28 layers \(0 to 27"):
        check_fits(cfg, ModelShape(28, 1536, "test"))
    check_fits(from_dict({"steering": {"layer_sets": [[27]]}}), ModelShape(28, 1536, "test"))


def test_answer_lengths_beyond_the_models_positions_are_named(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "tiny")  # max_position_embeddings 512
    shape = read_shape(folder)
    assert shape.max_positions == 512
    check_fits(from_dict({"data": {"sft_max_new_tokens": 96}}), shape)
    with pytest.raises(ConfigError, match=r"data.sft_max_new_tokens = 600: .* has 512 positions"):
        check_fits(from_dict({"data": {"sft_max_new_tokens": 600}}), shape)
    with pytest.raises(ConfigError, match=r"extract.max_new_tokens = 512"):
        check_fits(from_dict({"extract": {"max_new_tokens": 512}}), shape)
