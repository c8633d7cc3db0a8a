"""Backend switch: config, refusals, and that stages see nothing backend-specific."""

from __future__ import annotations

import ast
import inspect
from types import SimpleNamespace

import pytest

from nnsight_inoc.core.config import BackendConfig, ConfigError, from_dict
from nnsight_inoc.trace.backend import RemoteUnsupported, host_url, require_local
from tests._paths import ROOT


def test_host_url_defaults_to_public_ndif_with_tls():
    assert host_url(BackendConfig()) == "https://api.ndif.us"
    assert host_url(BackendConfig(host="127.0.0.1", port=8001, tls=False)) == "http://127.0.0.1:8001"
    with pytest.raises(ConfigError, match="bare host name"):
        from_dict({"backend": {"host": "http://127.0.0.1"}})  # a config error, before any work
    with pytest.raises(ConfigError, match="unknown key 'backend.api_key'"):
        from_dict({"backend": {"api_key": "secret"}})  # keys never live in configs, only their env var name


def test_lora_training_is_refused_remotely_naming_the_alternative():
    from nnsight_inoc.stages.drift import drift_run
    from nnsight_inoc.stages.finetune import train_run
    from nnsight_inoc.study import Study

    study = SimpleNamespace(tlm=SimpleNamespace(remote=True))
    study.require_local = lambda what: Study.require_local(study, what)
    for fn in (train_run, drift_run):  # training, and loading a trained adapter for drift
        with pytest.raises(RemoteUnsupported, match="--backend local"):
            fn(study, None, None)
    require_local(SimpleNamespace(remote=False), "anything")  # local: no-op


STAGE_MODULES = sorted(p.relative_to(ROOT / "nnsight_inoc").with_suffix("").as_posix()
                       for d in ("stages", "measures", "stats", "probes") for p in (ROOT / "nnsight_inoc" / d).glob("*.py")
                       if p.name != "__init__.py")
BACKEND_WORDS = {"remote", "backend", "nnsight", "NDIF", "ndif", "CONFIG"}


def _names(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(a.name.split(".")[-1] for a in node.names)
            if isinstance(node, ast.ImportFrom) and node.module:
                out.update(node.module.split("."))
        elif isinstance(node, ast.arg):
            out.add(node.arg)
    return out


@pytest.mark.parametrize(
    "path",
    [ROOT / "nnsight_inoc" / f"{m}.py" for m in STAGE_MODULES] + sorted((ROOT / "experiments").glob("*.py")),
    ids=lambda p: p.name,
)
def test_stage_and_experiment_code_names_nothing_backend_specific(path):
    """The backend lives in study.tlm; stage and experiment code never names it (only the flag differs)."""
    used = _names(ast.parse(path.read_text())) & BACKEND_WORDS
    assert not used, f"{path.name} uses backend-specific names {sorted(used)}"


def test_stage_functions_take_a_study_and_plain_values():
    """Every public stage entry point receives a Study (or plain data), never a backend object."""
    import importlib

    from nnsight_inoc.study import Study

    allowed = {"Study", "str", "int", "float", "bool", "SFTSet", "Sequence[str]", "torch.Tensor", "dict[str, Any]",
               "list[str]", "np.ndarray", "Any", "None", "nn.Module", "dict[str, str]", "Path",
               "Prompting | str", "str | list[str]", "Sequence[int]", "Sequence[RunSpec]", "FinetunePlan",
               "Sequence[str | None] | str | None", "Systems", "int | None"}  # Prompting, RunSpec, FinetunePlan: plain dataclasses
    checked = 0
    for m in ("stages.extract", "stages.align", "stages.lossmatch", "stages.align_summary", "stages.leak",
              "stages.transfer"):
        mod = importlib.import_module(f"nnsight_inoc.{m}")
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ != mod.__name__ or name.startswith("_"):
                continue
            params = inspect.signature(fn).parameters.values()
            anns = {str(p.annotation) for p in params}
            if "Study" in anns:
                checked += 1
                assert anns <= allowed, f"{m}.{name} takes {sorted(anns - allowed)}"
    assert checked >= 6
    assert "backend" not in {f.name for f in __import__("dataclasses").fields(Study)}
