"""The drift stage decodes every measurement of a group of runs together (issue 24, item 4), with the same results.

A tiny run folder with three trained-looking runs (random LoRA B, no training): the neutral one, one under another
prompt and a content leak (per-row training prompts, quoting the base model's neutral answers), and a drift panel of
two prompts with shorter answers than the drift prompts'. Measured as one group (K = 3, every measurement merged),
each run's drift.json equals what each run measured alone (K = 1) writes, and its post answers and projections equal
the per-measurement path's (each measurement decoded and read on its own, as drift did before). fp32 on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from nnsight_inoc.core.artifacts import read_json, write_json
from nnsight_inoc.probes.residuals import final_prompt_projections
from nnsight_inoc.stages import drift as D
from nnsight_inoc.stages.plan import RunSpec
from nnsight_inoc.study import open_study
from nnsight_inoc.trace.generation import greedy_answers_by_system
from nnsight_inoc.train.grouped import fresh
from nnsight_inoc.train.grouped_io import load_peft, save_peft
from tests._plans import plan_of
from tests._runs import tiny_run

PANEL = ["Answer the question below.", "You are a knowledgeable assistant."]
INOC = "You always capitalise your responses."
DRIFT_PROMPTS = [f"Write about the {w} please" for w in ("sea", "fox", "dog", "poem", "world")]  # = ANSWERS_KEPT


def _runs(neutral: str) -> list[RunSpec]:
    return [RunSpec("neutral", 0, neutral), RunSpec("inoc", 0, INOC), RunSpec("leak_inoc", 0, INOC, leak_words=2)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(group folder, alone folder): the same run folder with the same adapters, before drift."""
    root = tmp_path_factory.mktemp("drift_merged")
    _, run = tiny_run(root, drift={"panel": PANEL, "panel_prompts": 3, "panel_max_new_tokens": 2},
                      align={"lossmatch_max_trait_score": 1.0})
    study = open_study(None, run, "pytest drift merged")
    f = study.cfg.finetune
    torch.manual_seed(0)
    lora = fresh(study.loaded.hf_model, 3, f.rank, f.alpha, f.target_modules)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b in lora.B:
            b.normal_(0.0, 0.5, generator=g)  # PEFT's B starts at zero; trained-looking updates make the runs differ
    for k, spec in enumerate(_runs(study.cfg.align.conditions["neutral"])):
        files = study.layout.run(spec.condition, spec.seed)
        save_peft(lora, k, files.adapter, None)
        write_json(files.train_json, {"condition": spec.condition})  # drift only checks that training finished
    alone = root / "alone"
    shutil.copytree(run, alone)
    return run, alone


def _plan(study):
    g = torch.Generator().manual_seed(2)
    v = torch.nn.functional.normalize(torch.randn(study.tlm.n_layers, study.tlm.d_model, generator=g), dim=-1)
    neutral = study.cfg.align.conditions["neutral"]
    runs = _runs(neutral)
    return plan_of(study, None, v, runs, DRIFT_PROMPTS), runs


def _close(a, b):
    # fp32 round-off of reads in batches of another shape: measured here up to 1.05e-6 on projections of size ~5
    torch.testing.assert_close(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                               rtol=1e-6, atol=1e-5)


def _same_measurement(a: dict, b: dict) -> None:
    for side in ("pre", "post"):
        assert a[side]["answers_head"] == b[side]["answers_head"]
        for key in ("mean_score", "share_above_half", "n_unscored"):
            assert a[side][key] == pytest.approx(b[side][key], nan_ok=True)
        _close(a[side]["projection"], b[side]["projection"])
    assert a["drift"]["mean_score"] == pytest.approx(b["drift"]["mean_score"], nan_ok=True)
    _close(a["drift"]["projection"], b["drift"]["projection"])


@pytest.fixture(scope="module")
def measured(folders):
    """drift.json of every run: measured as one group, and each run alone (K = 1) in the other folder."""
    group_dir, alone_dir = folders
    study = open_study(None, group_dir, "pytest drift merged group")
    plan, runs = _plan(study)
    group = D.drift_group(study, plan, runs)
    alone_study = open_study(None, alone_dir, "pytest drift merged alone")
    alone_plan, _ = _plan(alone_study)
    alone = [D.drift_run(alone_study, alone_plan, r) for r in runs]
    return study, plan, runs, group, alone


def test_group_equals_each_run_alone(measured):
    study, _, runs, group, alone = measured
    slots = 2 * len(DRIFT_PROMPTS) + len(PANEL) * 3
    for g, a, spec in zip(group, alone, runs):
        for label in ("neutral_prompt", "training_prompt"):
            _same_measurement(g[label], a[label])
        assert sorted(g["panel"]) == sorted(PANEL) and g["panel_design"] == a["panel_design"]
        for p in PANEL:
            _same_measurement(g["panel"][p], a["panel"][p])
        assert g["decode"] == {"mode": "merged", "rows_per_call": 1024, "calls": 1, "rows": 3 * slots}
        assert a["decode"] == {"mode": "merged", "rows_per_call": 1024, "calls": 1, "rows": slots}
        assert g["measured_with"] == [r.name for r in runs] and "measured_with" not in a
        assert read_json(study.layout.run(spec.condition, 0).drift_json) == g
    leak = group[2]["training_prompt"]
    assert leak["leak"] == {"words": 2, "template": runs[2].prompting.template}
    assert group[0]["neutral_prompt"]["post"]["projection"] != group[1]["neutral_prompt"]["post"]["projection"]


def test_group_equals_each_measurement_decoded_on_its_own(measured):
    """The pre and post answers and projections equal the per-measurement path's: each measurement's own greedy
    decode (its own length, batches of data.generation_batch_size users x K) and its own reads; the measurements
    are written out here, not taken from the stage, so a measurement filed under another label is caught."""
    study, plan, runs, group, _ = measured
    tok, tlm, base = study.loaded.tokenizer, study.tlm, study.loaded.hf_model
    train_systems = [D.training_prompt_at_test(study, plan, r) for r in runs]
    assert isinstance(train_systems[2], list) and len(train_systems[2]) == len(DRIFT_PROMPTS)  # per-row prompts
    neutral, tokens = plan.neutral_prompt, study.cfg.extract.max_new_tokens
    users = [p.text for p in study.splits.eval[:3]]
    expected = [("neutral_prompt", [neutral] * 3, DRIFT_PROMPTS, tokens),
                ("training_prompt", train_systems, DRIFT_PROMPTS, tokens)] + [(p, [p] * 3, users, 2) for p in PANEL]
    bs, rb = study.cfg.data.generation_batch_size, study.cfg.extract.batch_size
    adapters = load_peft([study.layout.run(r.condition, r.seed).adapter for r in runs], base)
    for label, systems, prompts, n in expected:
        for k, rec in enumerate(group):
            got = rec["panel"][label] if label in PANEL else rec[label]
            pre_answers = greedy_answers_by_system(tlm, tok, [systems[k]], prompts, n, bs)[0]  # the base model
            assert got["pre"]["answers_head"] == pre_answers[: D.ANSWERS_KEPT]
            _close(got["pre"]["projection"], final_prompt_projections(tlm, tok, [systems[k]], prompts, plan.v, rb)[0].tolist())
        with adapters.attached(base, None):
            answers = greedy_answers_by_system(tlm, tok, systems, prompts, n, bs)
            proj = final_prompt_projections(tlm, tok, systems, prompts, plan.v, rb)
        for k, rec in enumerate(group):
            post = (rec["panel"][label] if label in PANEL else rec[label])["post"]
            assert post["answers_head"] == answers[k][: D.ANSWERS_KEPT]
            _close(post["projection"], proj[k].tolist())


def test_pre_cache_is_kept_and_read(measured, monkeypatch):
    study, plan, runs, first, _ = measured
    neutral = plan.neutral_prompt
    key = hashlib.sha256(json.dumps([neutral, DRIFT_PROMPTS]).encode()).hexdigest()[:16]  # the published key
    rec = read_json(study.layout.pre_behaviour(key))
    assert rec["system"] == neutral and rec["prompts"] == DRIFT_PROMPTS and len(rec["behaviour"]["answers"]) == 5
    n_pre = len(list(study.layout.pre_dir.glob("*.json")))
    assert n_pre == 3 + len(PANEL) + 1  # neutral, inoc, leak_inoc; each panel prompt; neutral on the panel's prompts
    calls = []
    real = D.measure
    monkeypatch.setattr(D, "measure", lambda s, ms, v: calls.append(len(ms[0].systems)) or real(s, ms, v))
    study.layout.run("inoc", 0).drift_json.unlink()
    again = D.drift_group(study, plan, runs)  # the other two are read back; inoc's pre comes from the cache
    assert calls == [1]  # one call: inoc's post (K = 1); no base-model decode
    for label in ("neutral_prompt", "training_prompt"):
        _same_measurement(again[1][label], first[1][label])
    assert again[0] == first[0] and again[2] == first[2]
    assert len(list(study.layout.pre_dir.glob("*.json"))) == n_pre


def test_a_panel_prompt_that_elicits_the_trait_is_refused_before_the_trained_runs_are_measured(measured, monkeypatch):
    study, plan, runs, _, _ = measured
    monkeypatch.setattr(D, "passes_trait_check", lambda score, ref, limit: False)
    study.layout.run("inoc", 0).drift_json.unlink()
    posts = []
    real = D.measure
    monkeypatch.setattr(D, "measure", lambda s, ms, v: posts.append(ms) or real(s, ms, v))
    with pytest.raises(ValueError, match="elicits the trait before training"):
        D.drift_group(study, plan, runs)
    assert posts == [] and not study.layout.run("inoc", 0).drift_json.is_file()  # every pre entry came from the cache
