"""The report a researcher reads (issue 27): the answer, the headline plot and the deciding numbers first; a smoke
run says its numbers mean nothing; every condition with the prompt it trains under; no estimate outside its own
interval and no percentage of a near-zero denominator; every layer, condition and control in the appendix."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from nnsight_inoc.core.config import preset_config
from nnsight_inoc.core.layout import REPORT_APPENDIX_MD
from nnsight_inoc.core.toml_text import to_toml
from nnsight_inoc.report.drift_sections import section_relation, undefined_sentence
from nnsight_inoc.report.lead import smoke_label
from nnsight_inoc.report.leak_sections import dial_words
from nnsight_inoc.report.sections import write_report
from nnsight_inoc.report.smoke import LINE, SMOKE_MODEL, smoke_line, smoke_reasons
from nnsight_inoc.stages.drift_summary import summarise_runs
from tests import _synthetic_run as S


def _cfg(preset: str) -> dict:
    return preset_config(preset).model_dump(mode="json")


def test_smoke_rule_reads_the_config():
    smoke = _cfg("smoke")
    reasons = smoke_reasons(smoke)
    assert reasons[0] == f"model {SMOKE_MODEL} (the smoke preset's)" and "2 LoRA steps (< 10)" in reasons
    for preset in ("allcaps", "spanish", "politeness"):
        assert smoke_reasons(_cfg(preset)) == [] and smoke_line(_cfg(preset)) is None, preset
    tiny = _cfg("allcaps")
    tiny["finetune"]["steps"] = 2  # the study model with tiny sizes is still a smoke run
    assert smoke_reasons(tiny) == ["2 LoRA steps (< 10)"]
    assert smoke_label("not supported", smoke) == "not supported (meaningless: smoke run)"
    assert smoke_label("not supported", _cfg("allcaps")) == "not supported"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The synthetic published run, its report as the study wrote it and as a smoke-model run."""
    layout = S.build(tmp_path_factory.mktemp("lead") / "allcaps")
    summarise_runs(layout, S.conditions(), S.SEEDS, 27, "main", n_boot=200, seed=0)
    md, _ = write_report(layout.root)
    study = (md.read_text(), layout.report_appendix_md.read_text())
    cfg = tomllib.loads(layout.config.read_text())
    cfg["model"]["name"] = SMOKE_MODEL
    layout.config.write_text(to_toml(cfg))
    md, htm = write_report(layout.root)
    return study, (md.read_text(), htm.read_text()), layout.root


def test_report_leads_with_the_answer_and_the_deciding_numbers(written):
    (md, appendix), _, root = written
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads[0] == "## Answer" and heads[1].startswith("## Training conditions")
    lead = md.split("## Answer")[1].split("\n## ")[0]
    assert "**Answer**" in lead and "fig_headline_drift.png" in lead
    table = lead.split("### The numbers that decide it")[1]
    for row in ("| C5 | inoc-neutral drift", "| C2 | inoc-lossmatch: cos(-g, v), layer",
                "| C9 | zero_v-neutral drift", "| C9 | zero_v-zero_rand drift", "| C10 | restore_v-inoc drift",
                "| C11 |"):
        assert row in table, row
    assert REPORT_APPENDIX_MD in lead and (root / REPORT_APPENDIX_MD).is_file()
    # The full tables left the report for the appendix.
    assert "### Control C per example" not in md and "### Control C per example" in appendix
    assert "### Drift under a panel of test prompts" in appendix
    assert len(md.splitlines()) < 200 and LINE not in md  # no smoke line for the study's own model and sizes


def test_smoke_run_says_so_at_the_top_and_in_its_answer(written):
    _, (md, htm), _ = written
    lines = [line for line in md.splitlines() if line.strip()]
    assert lines[0].startswith("# ") and lines[1].startswith(f"**{LINE}**") and SMOKE_MODEL in lines[1]
    answers = [line for line in md.splitlines() if line.startswith("- **Answer**")]
    assert answers and all("(meaningless: smoke run)**" in a for a in answers)
    assert LINE in htm and 'class="inconclusive"' in htm  # the label's colour class is the label's, not the note's


def test_conditions_show_the_prompt_they_train_under(written):
    (md, _), _, _ = written
    table = md.split("## Training conditions")[1].split("\n## ")[0]
    assert '| inoc | main | "' in table and "| neutral | main |" in table
    for arm in ("zero_v", "zero_rand", "flip_v", "restore_v"):
        if f"| {arm} |" in table:
            assert "prompt)" in table.split(f"| {arm} |")[1].split("\n")[0]


_TRIPLE = re.compile(r"([+-]?\d+\.\d+)%? \[([+-]?\d+\.\d+)%?, ([+-]?\d+\.\d+)%?\]")


@pytest.mark.parametrize("part", [0, 1])
def test_no_estimate_outside_its_interval_and_no_huge_percentage(written, part):
    text = written[0][part]
    bad = [m.group(0) for m in _TRIPLE.finditer(text)
           if not float(m.group(2)) - 1e-3 <= float(m.group(1)) <= float(m.group(3)) + 1e-3]
    assert not bad, bad[:5]
    assert not re.search(r"\d{4,}(\.\d+)?%", text)  # nothing like +25885.7%


def test_console_and_report_word_the_leak_match_alike():
    """stages/leak.py logs dial_words; the report prints the same function of the same leak.json record."""
    from nnsight_inoc.stages import leak as stage

    assert stage.dial_words is dial_words
    rec = {"words": 2, "achieved": {"mean": 0.052}, "reduction": {"mean": -0.00104}, "matched": False}
    text = dial_words(rec)
    assert "no percentage" in text and "%" not in text.split("on the dial's selection examples")[1]
    rec = {"words": 6, "achieved": {"mean": 0.105}, "reduction": {"mean": 0.1}, "matched": True}
    assert "+5.0% off" in dial_words(rec)


def test_undefined_correlations_are_one_sentence():
    """A run whose drift is exactly 0 everywhere: every relation is undefined; one sentence, no row of n/a."""
    err = "correlation undefined: drift is constant (0 in every run)"
    summ = {"relation": {f"pred{i}~drift": {"error": err} for i in range(30)},
            "correlations": {f"pred{i}~drift": {"error": err} for i in range(30)}, "layer": 1}
    blocks = section_relation(summ)
    assert not [b for b in blocks if b[0] == "table"]
    text = " ".join(b[1] for b in blocks)
    assert text.count("n/a") == 0 and "30 predictor ~ drift relations are undefined" in text and f"{err} (30)" in text
    assert undefined_sentence({"a": "x", "b": "y", "c": "x"}, "things").startswith("3 things are undefined")


def test_report_folder_name_is_defined_once():
    src = Path(__file__).resolve().parents[2] / "nnsight_inoc"
    hits = [p for p in src.rglob("*.py") if '"report_appendix.md"' in p.read_text()]
    assert [p.name for p in hits] == ["layout.py"]


def test_loss_match_shortfall_gives_no_percentage_of_almost_nothing():
    from nnsight_inoc.report.verdicts import loss_match_shortfall

    huge = loss_match_shortfall(258.86, "leak_inoc")  # the smoke run's: inoc - neutral loss is 0.0002 nats
    assert "25886" not in huge and "over 10 times" in huge and huge.count("%") == 1  # only the limit's 25%
    assert "leaves 49% of" in loss_match_shortfall(0.49, "lossmatch")


def test_restore_vs_unreached_layers_are_said_in_the_conditions_table(tmp_path):
    """A layer where restore_v's calibration used the nearest scale is named with its gap (never hidden)."""
    import json
    from types import SimpleNamespace

    from nnsight_inoc.core.layout import RunLayout
    from nnsight_inoc.report.conditions_section import _unreached

    run = SimpleNamespace(layout=RunLayout(tmp_path))
    assert _unreached(run, "restore_v") == ""  # not measured yet: nothing to say
    run.layout.restore_record.parent.mkdir(parents=True)
    run.layout.restore_record.write_text(json.dumps({"key": {}, "record": {"unreached": {"3": 0.0039}}}))
    assert _unreached(run, "restore_v") == "; at layers 3 (gap 0.0039) no scale reached it: the nearest was used"
    assert _unreached(run, "zero_v") == ""
    run.layout.restore_record.write_text(json.dumps({"key": {}, "record": {"unreached": {}}}))
    assert "reached at every edited layer" in _unreached(run, "restore_v")
    rec = {"factors": {"3": 0.5, "27": 4.25, "10": 2.0}, "required_layer": 27, "unreached": {}}
    run.layout.restore_record.write_text(json.dumps({"key": {}, "record": rec}))
    assert _unreached(run, "restore_v").startswith("; factors s = 4.25 at the reporting layer 27, 0.5 to 4.25 over "
                                                    "3 layers; neutral's alignment reached")
