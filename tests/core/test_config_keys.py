"""An unknown config key names the nearest valid one (issue 27)."""

from __future__ import annotations

import pytest

from nnsight_inoc.core.config import ConfigError, StudyConfig, from_dict
from nnsight_inoc.core.config_keys import all_keys, nearest_key


@pytest.mark.parametrize("data, line", [
    ({"finetune": {"stpes": 3}}, "unknown key 'finetune.stpes' (did you mean 'finetune.steps'?)"),
    ({"steps": 3}, "unknown key 'steps' (did you mean 'finetune.steps'?)"),  # a key in the wrong section
    ({"finetun": {}}, "unknown key 'finetun' (did you mean 'finetune'?)"),
    ({"align": {"batchsize": 2}}, "unknown key 'align.batchsize' (did you mean 'align.batch_size'?)"),
])
def test_unknown_key_suggests_the_nearest(data, line):
    with pytest.raises(ConfigError) as err:
        from_dict(data, "test")
    assert line in str(err.value)


def test_nothing_near_suggests_nothing():
    with pytest.raises(ConfigError) as err:
        from_dict({"zzzz": 1}, "test")
    assert "unknown key 'zzzz'" in str(err.value) and "did you mean" not in str(err.value)
    assert nearest_key(StudyConfig, []) is None


def test_all_keys_are_dotted_and_valid():
    keys = all_keys(StudyConfig)
    assert {"finetune", "finetune.steps", "model.name", "leak.template", "intervene.arms"} <= set(keys)
