"""C9-C11 and the answer on synthetic finetune-summary rows (3 seeds; a panel variant), one test per outcome
pattern of issue 22: the causal arms decide the answer, the correlational claims do not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from nnsight_inoc.report import causal_rules as CA
from nnsight_inoc.report import drift_rules as DR
from nnsight_inoc.report.answer import answer
from nnsight_inoc.report.load import drift_summary
from nnsight_inoc.report.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict

JITTER = (0.0, 0.01, -0.01)  # per seed, shared by every condition of the seed (seed-to-seed noise)
PROMPTS = [f"panel {k}" for k in range(5)]
OFFSETS = (-0.04, -0.02, 0.0, 0.02, 0.04)  # per panel test prompt


def _rows(drift: dict[str, list[float]], panel: bool = False) -> list[dict]:
    rows = []
    for cond, per_seed in drift.items():
        for s, d in enumerate(per_seed):
            r = {"condition": cond, "seed": s, "drift_score": d + JITTER[s]}
            if panel:
                r["drift_panel_by_prompt"] = {p: d + JITTER[s] + o for p, o in zip(PROMPTS, OFFSETS)}
                r["drift_panel_score"] = float(np.mean(list(r["drift_panel_by_prompt"].values())))
            rows.append(r)
    return rows


def _write(run_dir, rows, panel: bool = False):
    (run_dir / "finetune").mkdir(parents=True, exist_ok=True)
    extra = {"main_drift": "drift_panel_score"} if panel else {}
    (run_dir / "finetune" / "finetune_summary.json").write_text(json.dumps(
        {"layer": 3, "rows": rows, "correlations": {}, "relation": {}, "position": "a_sum", "which": "main",
         "n_runs": len(rows), "not_run": [], "sign_note": "", "condition_means": {}, **extra}))
    return drift_summary(run_dir)


def _flat(x: float, tiny: float = 0.003) -> list[float]:
    return [x, x + tiny, x - tiny]


def _verdicts(run_dir, c2=SUPPORTED):
    summ = drift_summary(run_dir)
    v = {"C5": DR.c5_drift(run_dir), "C2": Verdict(c2, "alignment rules"), "C9": CA.c9_sufficiency(summ),
         "C10": CA.c10_necessity(summ), "C11": CA.c11_factorial(summ)}
    return v, answer(v)


BASE = {"neutral": _flat(0.80), "inoc": _flat(0.10), "zero_rand": _flat(0.79), "restore_v": _flat(0.70),
        "leak_inoc": _flat(0.75), "inoc_leak_inoc": _flat(0.08)}


@pytest.mark.parametrize("panel", [False, True])
def test_a_zero_v_drifts_like_neutral_so_the_answer_is_no(tmp_path, panel):
    """(a) The leak drifts, inoculation does not, but removing v's component leaves drift where it was."""
    like_neutral = [a + b for a, b in zip(BASE["neutral"], (0.01, -0.005, 0.0))]  # noisy, mean +0.002
    _write(tmp_path, _rows({**BASE, "zero_v": like_neutral}, panel), panel)
    v, ans = _verdicts(tmp_path)
    assert v["C5"].label == SUPPORTED and v["C11"].label == SUPPORTED
    assert v["C9"].label == NOT_SUPPORTED and v["C9"].reason.startswith("decided against by zero_v - neutral")
    assert "zero_v vs neutral: not supported (no difference beyond +-0.05" in v["C9"].reason
    assert ans.label == NOT_SUPPORTED and "(zero_v) did not prevent drift (C9: decided against by zero_v - neutral" \
        in ans.reason


@pytest.mark.parametrize("panel", [False, True])
def test_b_zero_v_and_inoc_prevent_drift_and_restore_v_brings_it_back(tmp_path, panel):
    _write(tmp_path, _rows({**BASE, "zero_v": _flat(0.15)}, panel), panel)
    v, ans = _verdicts(tmp_path)
    assert [v[c].label for c in ("C5", "C9", "C10", "C11")] == [SUPPORTED] * 4
    assert ans.label == SUPPORTED and ans.reason.startswith("Yes: inoculation (inoc) drifted less than neutral")
    assert "(restore_v) brought drift back (C10)" in ans.reason
    assert answer({**v, "C2": Verdict(INCONCLUSIVE, "", ("C2 short",))}).label == INCONCLUSIVE


def test_c_noisy_seeds_are_inconclusive_and_name_the_shortfall(tmp_path):
    _write(tmp_path, _rows({**BASE, "zero_v": [0.2, 0.9, 0.3], "restore_v": [0.7, 0.05, 0.4]}))
    v, ans = _verdicts(tmp_path)
    assert v["C9"].label == INCONCLUSIVE and v["C10"].label == INCONCLUSIVE
    assert ans.label == INCONCLUSIVE and "What fell short" in ans.reason
    assert "zero_v - neutral drift: the CI's upper end" in ans.reason
    assert "restore_v - inoc drift: the CI's lower end" in ans.reason and "(C10)" in ans.reason


def test_restore_v_stays_protected_so_the_answer_is_no(tmp_path):
    _write(tmp_path, _rows({**BASE, "zero_v": _flat(0.15), "restore_v": _flat(0.11)}))
    v, ans = _verdicts(tmp_path)
    assert v["C10"].label == NOT_SUPPORTED and "left inoculation's protection intact" in v["C10"].reason
    assert "restore_v - neutral" in v["C10"].reason  # described beside it
    assert ans.label == NOT_SUPPORTED and "(restore_v) left inoculation's protection intact (C10)" in ans.reason


def test_a_consistent_small_difference_is_not_supported(tmp_path):
    _write(tmp_path, _rows({**BASE, "inoc": [0.789, 0.789, 0.789]}))  # inoc - neutral -0.011 on every seed
    v, ans = _verdicts(tmp_path)
    assert v["C5"].label == NOT_SUPPORTED and "negligible band" in v["C5"].reason
    assert ans.label == NOT_SUPPORTED


def test_two_seeds_are_inconclusive(tmp_path):
    rows = [r for r in _rows({**BASE, "zero_v": _flat(0.15)}) if r["seed"] < 2]
    _write(tmp_path, rows)
    v, ans = _verdicts(tmp_path)
    assert v["C9"].shortfall == ("paired seeds zero_v vs neutral: 2, needed 3 (1 missing)",
                                 "paired seeds zero_v vs zero_rand: 2, needed 3 (1 missing)")
    assert ans.label == INCONCLUSIVE and "paired seeds inoc vs neutral: 2, needed 3 (1 missing) (C5)" in ans.reason


def test_missing_arms_are_not_run(tmp_path):
    assert CA.c9_sufficiency(None).reason.startswith("not run")
    _write(tmp_path, _rows({"neutral": _flat(0.8), "inoc": _flat(0.1)}))
    v, ans = _verdicts(tmp_path)
    assert v["C9"].reason == "not run: no zero_v, zero_rand runs in the drift summary"
    assert v["C10"].shortfall == ("restore_v runs: not run",) and v["C11"].label == INCONCLUSIVE
    assert ans.label == INCONCLUSIVE and "zero_v, zero_rand runs: not run (C9)" in ans.reason


def test_c11_reports_every_x_and_is_labelled_by_inoc(tmp_path):
    _write(tmp_path, _rows({**BASE, "leak_w8": _flat(0.6), "inoc_leak_w8": _flat(0.59)}))
    v = CA.c11_factorial(drift_summary(tmp_path))
    assert v.label == SUPPORTED and "X = inoc:" in v.reason and "X = w8: not supported" in v.reason
    _write(tmp_path, _rows({"neutral": _flat(0.8), "leak_w8": _flat(0.6), "inoc_leak_w8": _flat(0.59)}))
    assert CA.c11_factorial(drift_summary(tmp_path)).label == NOT_SUPPORTED


def test_panel_prompts_are_averaged_before_the_seed_interval(tmp_path):
    """The interval C5 reads equals the hand-computed t-interval over the 3 per-seed panel means; the 15
    (seed, prompt) cells taken as replicates would give a narrower one."""
    drift = {"neutral": [0.8, 0.8, 0.8], "inoc": [0.70, 0.62, 0.76]}
    rows = _rows(drift, panel=True)
    _write(tmp_path, rows, panel=True)
    per_seed = [a["drift_panel_score"] - b["drift_panel_score"] for a, b in zip(rows[3:], rows[:3])]
    m, sd = np.mean(per_seed), np.std(per_seed, ddof=1)
    half = sps.t.ppf(0.975, 2) * sd / math.sqrt(3)
    v = DR.c5_drift(tmp_path)
    assert v.label == INCONCLUSIVE and f"{m:+.3f} [{m - half:+.3f}, {m + half:+.3f}]" in v.reason
    cells = [a["drift_panel_by_prompt"][p] - b["drift_panel_by_prompt"][p] for a, b in zip(rows[3:], rows[:3])
             for p in PROMPTS]
    half15 = sps.t.ppf(0.975, 14) * np.std(cells, ddof=1) / math.sqrt(15)
    assert half15 < half / 2 and m + half15 < 0  # as replicates the prompts would wrongly put the CI below 0
