"""The study context every stage receives: config, model, trait, data and run folder.

Stages take a :class:`Study` and nothing backend-specific; the backend choice lives
inside ``study.tlm`` (built by :mod:`nnsight_inoc.backend`, traced by
:mod:`nnsight_inoc.tracing`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from . import artifacts as A
from .config import StudyConfig, dump_toml
from .data import Splits, build_splits, load_splits, save_splits
from .generation import greedy_answers
from .models import LoadedModel, home, load_model, resolve_device
from .progress import log, task
from .traits import Trait, get_trait
from .backend import backend_fact, traced_lm
from .tracing import TracedLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Study:
    cfg: StudyConfig
    run_dir: Path
    loaded: LoadedModel
    tlm: TracedLM
    trait: Trait
    prov: A.Provenance
    _splits: Splits | None = field(default=None, repr=False)

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = ensure_splits(self.cfg, self.run_dir)
        return self._splits


def ensure_splits(cfg: StudyConfig, run_dir: Path) -> Splits:
    """Load the run's splits, building them if absent (needs PyPI the first time)."""
    folder = run_dir / A.DATA_DIR
    if (folder / "splits.json").is_file():
        splits = load_splits(folder)
        want = cfg.data
        got = splits.card.get("config", {})
        if got and got != want.model_dump(include=set(got)):
            raise ValueError(
                f"{folder} was built with a different data config ({got}); use another --run-dir or delete it"
            )
        return splits
    splits = build_splits(cfg.data, home())
    save_splits(splits, folder)
    return splits


def open_study(cfg: StudyConfig, run_dir: Path, command: str, provenance: str = A.PROVENANCE) -> Study:
    """Load the model and trait, and start (or resume) the run folder's provenance."""
    run_dir.mkdir(parents=True, exist_ok=True)
    prov = A.Provenance(run_dir, dump_toml(cfg), command, provenance)
    t0 = time.time()
    remote = cfg.backend.kind == "remote"
    device = "meta" if remote else resolve_device(cfg.model.device)
    # Remote: the architecture on the meta device (module structure), the tokenizer and
    # the sha256 of the weights the server loads; no weights in local memory.
    loaded = load_model(cfg.model.name, device=device, dtype=cfg.model.dtype, weights=not remote)
    autocast = None if cfg.model.autocast == "none" else DTYPES[cfg.model.autocast]
    tlm = traced_lm(cfg.backend, loaded.hf_model, loaded.location, loaded.tokenizer, autocast)
    prov.fact(
        "model",
        {
            "name": loaded.name,
            "source": loaded.source,
            "sha256": loaded.sha256,
            "dtype": loaded.dtype,
            "device": loaded.device,
            "n_layers": tlm.n_layers,
            "d_model": tlm.d_model,
            "notes": loaded.notes,
        },
    )
    prov.fact("backend", backend_fact(cfg.backend))
    prov.stage("load_model", time.time() - t0)
    return Study(cfg=cfg, run_dir=run_dir, loaded=loaded, tlm=tlm, trait=get_trait(cfg.trait.name), prov=prov)


@dataclass
class SFTSet:
    """The SFT examples every condition trains on, in one fixed order."""

    ids: list[str]
    prompts: list[str]
    source_answers: list[str]  # the model's own answers the completions come from (neutral prompt, or sft_system)
    completions: list[str]  # trait-transformed
    excluded: dict[str, int]


def answers(study: Study, system: str, users: Sequence[str], max_new_tokens: int, label: str) -> list[str]:
    """The study model's greedy answers under one system prompt, batched, with a progress bar."""
    with task(label, len(users)) as adv:
        return greedy_answers(study.tlm, study.loaded.tokenizer, system, users, max_new_tokens,
                              study.cfg.data.generation_batch_size, on_batch=adv)


def sft_key(study: Study) -> str:
    blob = json.dumps(
        {
            "model": study.loaded.sha256 or study.loaded.name,
            "dtype": study.loaded.dtype,
            "data": study.splits.sha256(),
            "max_new_tokens": study.cfg.data.sft_max_new_tokens,
            "neutral": study.trait.neutral,
            "sft_system": study.trait.sft_system,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def ensure_sft(study: Study) -> SFTSet:
    """The model's own answers carrying the trait; cached per model, data hash and generation prompt.

    ALL-CAPS: neutral answers, upper-cased. Traits with ``sft_system`` (Spanish): answers
    generated under that prompt, kept only if they score as the trait (see :func:`_filter_sft`).
    """
    key = sft_key(study)
    cache = home() / "completions" / f"{key}.json"
    run_copy = study.run_dir / A.SFT_COMPLETIONS
    data: dict[str, Any] | None = None
    for path in (run_copy, cache):
        if path.is_file():
            cand = A.read_json(path)
            if cand.get("key") == key:
                data = cand
                break
    if data is None:
        t0 = time.time()
        sft = study.splits.sft
        users = [p.text for p in sft]
        system = study.trait.sft_system or study.trait.neutral
        generated = answers(study, system, users, study.cfg.data.sft_max_new_tokens,
                            f"SFT completions (greedy, system: {system!r})")
        data = {"key": key, "ids": [p.id for p in sft], "prompts": users, "source_answers": generated}
        A.write_json(cache, data)
        study.prov.stage("sft_completions", time.time() - t0, n=len(users))
    # The run folder's copy must be the data actually used: replace one left by an older key format.
    if run_copy.resolve() != cache.resolve() and (not run_copy.is_file() or A.read_json(run_copy).get("key") != key):
        A.write_json(run_copy, data)
    return _filter_sft(study, data)


def _filter_sft(study: Study, data: dict[str, Any]) -> SFTSet:
    """Drop (and count) answers that cannot carry the trait or fill the measured positions."""
    tok = study.loaded.tokenizer
    need = study.cfg.align.n_assistant_tokens
    keep_ids, keep_p, keep_a, keep_c = [], [], [], []
    trait = study.trait
    excluded = {"empty_or_unscorable": 0, "too_short": 0, "not_trait": 0}
    for i, p, a in zip(data["ids"], data["prompts"], data["source_answers"]):
        c = a if trait.sft_system is not None else trait.transform(a)
        score = trait.score(c)
        if score is None:
            excluded["empty_or_unscorable"] += 1
            continue
        if trait.sft_system is not None and score < trait.sft_min_score:
            excluded["not_trait"] += 1  # e.g. an answer that stayed in English
            continue
        if len(tok(c, add_special_tokens=False)["input_ids"]) < need:
            excluded["too_short"] += 1
            continue
        keep_ids.append(i)
        keep_p.append(p)
        keep_a.append(a)
        keep_c.append(c)
    if any(excluded.values()):
        log(f"SFT examples excluded: {excluded} (kept {len(keep_ids)})")
    return SFTSet(keep_ids, keep_p, keep_a, keep_c, excluded)
