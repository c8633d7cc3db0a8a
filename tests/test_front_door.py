"""The front door: every exported name resolves, and importing the package loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import nnsight_inoc


def test_every_exported_name_resolves_to_its_module():
    for name in nnsight_inoc.__all__:
        obj = getattr(nnsight_inoc, name)
        assert obj is not None, name
    assert set(nnsight_inoc.__all__) <= set(dir(nnsight_inoc))


def test_import_is_light_until_a_name_is_used():
    code = ("import sys, nnsight_inoc; heavy = [m for m in ('torch', 'transformers', 'nnsight') if m in sys.modules]; "
            "assert not heavy, heavy; nnsight_inoc.load_config; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_is_an_attribute_error():
    try:
        nnsight_inoc.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("expected AttributeError")
