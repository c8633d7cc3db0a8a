"""The study context every stage receives: config, model, trait, data, run folder; and what it shares.

Stages take a :class:`Study` and nothing backend-specific; the backend choice lives
inside ``study.tlm`` (built by :mod:`nnsight_inoc.trace.backend`, traced by
:mod:`nnsight_inoc.trace.tracing`). Also here, because every stage after ``extract`` needs
them: the SFT set (the model's own answers carrying the trait, :func:`ensure_sft`) and the
saved trait directions (:func:`load_directions`, :func:`load_direction`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from nnsight_inoc.core import artifacts as A
from nnsight_inoc.core.config import ConfigError, StudyConfig, apply_overrides, dump_toml
from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.core.progress import log, task
from nnsight_inoc.core.runconfig import check_against_folder, folder_config
from nnsight_inoc.core.writable import check_writable
from nnsight_inoc.data.splits import Splits, build_splits, load_splits, save_splits
from nnsight_inoc.data.traits import Trait, get_trait
from nnsight_inoc.data.traits.checks import check_panel, lossmatch_candidates
from nnsight_inoc.measures.directions import POSITIONS
from nnsight_inoc.models.cache import home
from nnsight_inoc.models.device import check_device
from nnsight_inoc.models.load import LoadedModel, load_model, resolve_device
from nnsight_inoc.models.shape import ModelShape, check_fits, local_folder, read_shape
from nnsight_inoc.models.template import check_folder_template
from nnsight_inoc.probes.gradients import GradientMetrics, gradient_metrics
from nnsight_inoc.trace.backend import backend_fact, require_local, traced_lm
from nnsight_inoc.trace.chat import Systems
from nnsight_inoc.trace.generation import greedy_answers, model_stops
from nnsight_inoc.trace.tracing import TracedLM

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

    def require_local(self, what: str) -> None:
        """Refuse ``what`` (LoRA training, loading adapters) before any of it runs when traces are remote."""
        require_local(self.tlm, what)

    @property
    def layout(self) -> RunLayout:
        """Every path in this study's run folder."""
        return RunLayout(self.run_dir)

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = ensure_splits(self.cfg, self.run_dir)
        return self._splits


def ensure_splits(cfg: StudyConfig, run_dir: Path) -> Splits:
    """Load the run's splits, building them if absent (needs PyPI the first time)."""
    layout = RunLayout(run_dir)
    folder = layout.data_dir
    if layout.splits.is_file():
        splits = load_splits(folder)
        want = cfg.data
        got = splits.card.get("config", {})
        if got and got != want.model_dump(include=set(got)):
            raise ValueError(
                f"{folder} was built with a different data config ({got}); give the config it was built with, "
                "or use another --run-dir"
            )
        return splits
    splits = build_splits(cfg.data, home())
    save_splits(splits, folder)
    return splits


def preflight(
    cfg: StudyConfig,
    run_dir: Path,
    *,
    origins: Mapping[str, str] | None = None,
    variant: Collection[str] = (),
    model: bool = True,
) -> dict[str, tuple[Any, Any]]:
    """Every check that needs no weights, before anything is written or loaded; returns the config's changes.

    In order: the config against the run folder's own config.toml (a key that results were made
    with may not change; :mod:`nnsight_inoc.core.runconfig`), the folder writable, the
    loss-matched control's candidates and the drift panel (:mod:`nnsight_inoc.data.traits.checks`), and with
    ``model``: the device present (local backend), the config against the model's shape read
    from its config alone (steering layers), and, for a model already on this machine, its chat
    template's system role. Each failure is a usage error naming the bad value.
    """
    changes = check_against_folder(cfg, run_dir, origins, variant)
    check_writable(run_dir)
    trait = get_trait(cfg.trait.name)
    lossmatch_candidates(trait, cfg.align.lossmatch_pool)
    check_panel(cfg.drift.panel, {*cfg.align.conditions.values(), *(p for _, p in trait.variants)}, trait)
    if model:
        if cfg.backend.kind == "local":
            check_device(cfg.model.device)
        shape = read_shape(cfg.model.name)
        if shape is not None:
            check_fits(cfg, shape)
        folder = local_folder(cfg.model.name)
        if folder is not None:  # a template without a system role, before the lock and the weights
            check_folder_template(folder, cfg.model.system_role, cfg.model.name)
    return changes


def open_study(
    cfg: StudyConfig | None,
    run_dir: Path,
    command: str,
    provenance: str | None = None,
    *,
    variant: Collection[str] = (),
    origins: Mapping[str, str] | None = None,
    sources: dict[str, Any] | None = None,
    weights: bool = True,
) -> Study:
    """Check the inputs, load the model and trait, then start (or resume) the run folder's provenance.

    ``cfg=None`` uses the run folder's own config.toml (an existing folder's config is the default
    of every later command on it). Nothing is written before :func:`preflight` passed and the
    model loaded; config.toml is written when the folder has none or when ``cfg`` changes a key
    it may change. ``variant`` names keys an experiment deliberately measures another value of
    (precision_check: ``model.autocast``): allowed, recorded in the invocation's provenance, never
    written into config.toml. ``origins`` and ``sources`` say where the config's values came from
    (messages, provenance).

    ``provenance`` labels a process that shares the run folder with others (a parallel
    finetune worker: ``worker<i>``; a profiler): it keeps its own provenance file
    (``provenance.<label>.json``), so no process overwrites another's stages.
    ``weights=False`` builds the model on the meta device (structure, tokenizer and the
    weights' sha256 only), for a process that plans and writes but never runs the model (the
    Ray executor's driver); running it then fails loudly on meta tensors.
    """
    run_dir = Path(run_dir)
    if cfg is None:
        cfg = folder_config(run_dir)
        if cfg is None:
            raise ConfigError(f"run folder {run_dir} has no config.toml: pass a config (load_config(...)), or "
                              "run a stage there first")
    changes = preflight(cfg, run_dir, origins=origins, variant=variant)
    remote = cfg.backend.kind == "remote"
    device = "meta" if remote or not weights else resolve_device(cfg.model.device)
    if weights and cfg.align.capture_precision == "tf32" and (remote or not device.startswith("cuda")
                                                              or cfg.model.dtype != "float32"
                                                              or cfg.model.autocast != "none"):
        raise ValueError(f"align.capture_precision = 'tf32' needs a local CUDA float32 model without autocast "
                         f"(TF32 is a tensor-core format); this run is {cfg.backend.kind} on {device}, "
                         f"{cfg.model.dtype}, autocast {cfg.model.autocast}: use 'fp32'")
    t0 = time.time()
    # Remote: the architecture on the meta device (module structure), the tokenizer and
    # the sha256 of the weights the server loads; no weights in local memory.
    loaded = load_model(cfg.model.name, device=device, dtype=cfg.model.dtype, weights=weights and not remote,
                        system_role=cfg.model.system_role)
    autocast = None if cfg.model.autocast == "none" else DTYPES[cfg.model.autocast]
    tlm = traced_lm(cfg.backend, loaded.hf_model, loaded.location, loaded.tokenizer, autocast)
    tlm.grad_tf32 = cfg.align.capture_precision == "tf32"
    check_fits(cfg, ModelShape(tlm.n_layers, tlm.d_model, "the loaded model"))  # hub ids: their first check
    layout = RunLayout(run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in changes.items() if k not in variant}
    if not layout.config.is_file() or kept:  # an experiment's variant values never become the folder's config
        A.write_text(layout.config, dump_toml(apply_overrides(cfg, {k: changes[k][0] for k in changes if k in variant})))
    prov_path = layout.provenance if provenance is None else layout.provenance_of(provenance)
    prov = A.Provenance(prov_path, command, sources=sources, config_changes=changes)
    prov.fact(
        "model" if weights else "model_structure_only",  # a weight-less driver must not overwrite the stages' fact
        {
            "name": loaded.name,
            "source": loaded.source,
            "sha256": loaded.sha256,
            "dtype": loaded.dtype,
            "device": loaded.device,
            "n_layers": tlm.n_layers,
            "d_model": tlm.d_model,
            "notes": loaded.notes,
            "system_role": loaded.system_role,
            "template_default_system": loaded.default_system,
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
    # The model's own UNTRAITED answer to each prompt (the content without the trait): the neutral answer for a
    # transform trait (= source_answers), the answer under the neutral prompt for an sft_system trait. The loss
    # split and the content-leak control read it (issue 16).
    untraited: list[str] | None = None


def answers(study: Study, system: Systems, users: Sequence[str], max_new_tokens: int, label: str) -> list[str]:
    """The study model's greedy answers under one system prompt (or one per user), batched, with a progress bar."""
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
            # The stop set decides where each answer ends (issue 18 C): answers cached under another set are stale.
            "stops": list(model_stops(study.tlm, study.loaded.tokenizer)),
            # only when not the default, so that the keys of existing caches stay valid
            **({"system_role": study.loaded.system_role} if study.loaded.system_role != "native" else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def sft_available(study: Study) -> bool:
    """True when :func:`ensure_sft` would find the answers (run folder or cache) instead of generating them."""
    key = sft_key(study)
    paths = (study.layout.sft_completions, home() / "completions" / f"{key}.json")
    return any(p.is_file() and A.read_json(p).get("key") == key for p in paths)


def ensure_sft(study: Study) -> SFTSet:
    """The model's own answers carrying the trait; cached per model, data hash and generation prompt.

    ALL-CAPS: neutral answers, upper-cased. Traits with ``sft_system`` (Spanish): answers
    generated under that prompt, kept only if they score as the trait (see :func:`_filter_sft`).
    """
    key = sft_key(study)
    cache = home() / "completions" / f"{key}.json"
    run_copy = study.layout.sft_completions
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
    if study.trait.sft_system is not None and "neutral_answers" not in data:
        # Added to the same cache entry (same key): the SFT answers themselves are unchanged.
        t0 = time.time()
        data["neutral_answers"] = answers(study, study.trait.neutral, data["prompts"],
                                          study.cfg.data.sft_max_new_tokens,
                                          f"untraited answers (greedy, system: {study.trait.neutral!r})")
        A.write_json(cache, data)
        study.prov.stage("sft_untraited", time.time() - t0, n=len(data["prompts"]))
    # The run folder's copy must be the data actually used: replace one left by an older key format.
    if run_copy.resolve() != cache.resolve() and (not run_copy.is_file() or A.read_json(run_copy) != data):
        A.write_json(run_copy, data)
    return _filter_sft(study, data)


def _filter_sft(study: Study, data: dict[str, Any]) -> SFTSet:
    """Drop (and count) answers that cannot carry the trait or fill the measured positions."""
    tok = study.loaded.tokenizer
    need = study.cfg.align.n_assistant_tokens
    keep_ids, keep_p, keep_a, keep_c, keep_u = [], [], [], [], []
    trait = study.trait
    untraited = data["source_answers"] if trait.sft_system is None else data.get("neutral_answers")
    excluded = {"empty_or_unscorable": 0, "too_short": 0, "not_trait": 0}
    for j, (i, p, a) in enumerate(zip(data["ids"], data["prompts"], data["source_answers"])):
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
        keep_u.append(untraited[j] if untraited is not None else None)
    if any(excluded.values()):
        log(f"SFT examples excluded: {excluded} (kept {len(keep_ids)})")
    return SFTSet(keep_ids, keep_p, keep_a, keep_c, excluded, None if untraited is None else keep_u)


def load_directions(study: Study) -> tuple[torch.Tensor, dict[str, Any]]:
    """The saved v (L, P, d) with its metadata (``extract/directions.pt``), checked against this run.

    ValueError when the directions come from another model or other data splits;
    FileNotFoundError when ``extract`` has not run.
    """
    blob = A.load_torch(study.layout.directions)
    where = study.layout.directions
    if blob["model_sha256"] != study.loaded.sha256 or blob["model_name"] != study.loaded.name:
        raise ValueError(
            f"{where} was extracted from model {blob['model_name']!r} (sha256 {str(blob['model_sha256'])[:12]}), but "
            f"this command loaded {study.loaded.name!r} (sha256 {str(study.loaded.sha256)[:12]}); check --model and "
            "--config (the run folder's config.toml names the model it was made with), or use another --run-dir")
    if blob["splits_sha256"] != study.splits.sha256():
        raise ValueError(f"{where} was extracted from other data splits than {study.layout.splits}; check --config, "
                         "or use another --run-dir")
    return blob["v"], blob


def load_direction(study: Study, position: str | None = None) -> torch.Tensor:
    """v(l) at one named position, (L, d) float32 unit rows: ``final_prompt``, ``first_assistant`` or
    ``response_mean`` (default: the config's ``align.direction_position``, what the study reports on)."""
    v_all, meta = load_directions(study)
    positions = list(meta.get("positions") or POSITIONS)
    name = position or study.cfg.align.direction_position
    if name not in positions:
        raise ValueError(f"unknown direction position {name!r}; saved positions: {positions}")
    return v_all[:, positions.index(name)]


def reporting_layer(study: Study) -> int:
    """The layer extract chose to report on (saved with the directions)."""
    return int(load_directions(study)[1]["layer"])


def gradient_cosines(
    study: Study,
    system: str,
    prompts: Sequence[str] | None = None,
    completions: Sequence[str] | None = None,
    *,
    position: str | None = None,
    n: int | None = None,
) -> GradientMetrics:
    """Per-example cos(-g, v) (with projection, norm and loss) for one system prompt and a set of examples.

    Defaults: the study's SFT examples (the first ``n``, all when None; a UserWarning says how many were used
    when fewer than ``n`` exist), v at ``position``
    (default ``align.direction_position``), the config's batch size and assistant positions.
    ``.cos`` is (n, L, P) over positions ``.positions`` (final_prompt, a1..ak, a_sum). The same
    loop as the align stage, so numbers are comparable with ``align/align_summary.json``.
    ``system`` is required ("" for an empty system turn): None would let the chat template insert
    its own default (see ``trace.chat.prompt_ids``, which refuses it naming that default).
    """
    if (prompts is None) != (completions is None):
        raise ValueError("give both prompts and completions, or neither (then the SFT set is used)")
    if prompts is None or completions is None:
        sft = ensure_sft(study)
        prompts, completions, ids = sft.prompts, sft.completions, sft.ids
    else:
        ids = None
    stop = len(prompts) if n is None else min(n, len(prompts))
    if n is not None and n > len(prompts):
        warnings.warn(f"gradient_cosines: n={n} asked, but {'the SFT set' if ids is not None else 'the prompts given'} "
                      f"hold(s) {len(prompts)} examples; using all {len(prompts)} (the result's .cos has "
                      f"{len(prompts)} rows)", UserWarning, stacklevel=2)
    cfg = study.cfg.align
    return gradient_metrics(study.tlm, study.loaded.tokenizer, system, prompts[:stop], completions[:stop],
                            load_direction(study, position), n_assistant=cfg.n_assistant_tokens,
                            batch_size=cfg.batch_size, ids=None if ids is None else ids[:stop],
                            label=f"gradient_cosines {system!r}")
