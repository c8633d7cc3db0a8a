"""Render what a run folder's JSON allows, skip the rest with a printed reason; the controls probe's figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnsight_inoc.core.layout import RunLayout
from nnsight_inoc.report import figures_run as FR

L = 4


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _ci(m: float) -> dict:
    return {"mean": m, "lo": m - 0.01, "hi": m + 0.01}


def _align(run: Path, split: bool) -> None:
    conds = {c: {"n": 9, "cos": {"a_sum": {k: list(np.linspace(0, 0.1, L) + d) for k, d in
                                           (("mean", b), ("lo", b - 0.01), ("hi", b + 0.01))}}}
             for c, b in (("neutral", 0.0), ("inoc", -0.01), ("lossmatch", -0.005), ("explicit", -0.05))}
    summ = {"layer": L - 1, "conditions": conds}
    if split:
        summ["loss_split"] = {"conditions": {c: {"total": _ci(0.03), "trait": _ci(0.04), "content": _ci(-0.01)}
                                             for c in ("inoc", "lossmatch", "explicit")}}
    _write(RunLayout(run).align_summary, summ)


def test_a_folder_with_align_only_renders_its_figures_and_says_why_not_the_others(tmp_path, capsys) -> None:
    _align(tmp_path, split=False)
    done = FR.render_run_figures(tmp_path)
    out = capsys.readouterr().out
    assert Path(done[FR.ALIGN_COS]).stat().st_size > 1000
    for name in (FR.LOSS_SPLIT, FR.DCOS_PARTS, FR.DIAL, FR.HEADLINE, FR.PROJECTION_PANELS, FR.PROBE_COS):
        assert done[name].startswith("skipped: ") and f"figure {name} skipped: " in out


def test_a_full_folder_renders_every_figure(tmp_path) -> None:
    lay = RunLayout(tmp_path)
    _align(tmp_path, split=True)
    _write(lay.leak, {"n_examples": 9, "key": {"tolerance": 0.1},
                      "curve": [{"words": w, "reduction": _ci(0.01 * w)} for w in (1, 2, 4, 8)],
                      "targets": {"inoc": {"reduction": _ci(0.04), "words": 4, "matched": True}}})
    rows = []
    for c in ("neutral", "inoc", "zero_v"):
        for s in range(2):
            rows.append({"condition": c, "seed": s, "drift_score": 0.5 if c == "neutral" else 0.1 * s})
            files = lay.run(c, s)
            _write(files.drift_json, {"neutral_prompt": {"drift": {"projection": list(np.arange(L) * (s + 1.0))}}})
            _write(files.train_json, {"positions": ["final_prompt", "a_sum"],
                                      "probes": [{"step": 0, "cos": [[0.01 * l, 0.02 * l] for l in range(L)]}]})
    _write(lay.summary(False), {"layer": L - 1, "rows": rows})
    done = FR.render_run_figures(tmp_path)
    assert not [n for n, v in done.items() if v.startswith("skipped")], done
    assert all(Path(done[n]).stat().st_size > 1000 for n in (*FR.ALIGN_FIGURES, *FR.DRIFT_FIGURES))
    assert {Path(done[n]).parent.name for n in FR.ALIGN_FIGURES} == {"align"}


def test_controls_probe_figures_and_loss_parts(tmp_path) -> None:
    rng = np.random.default_rng(0)
    conds = {}
    for c, shift in (("neutral", 0.0), ("inoc", 0.03), ("leak_inoc", 0.03)):
        loss = 1.0 - shift + 0.05 * rng.normal(size=8)
        conds[c] = {"loss": loss.tolist(), "content_loss": (loss - 0.4).tolist(),
                    "mean_cos": [[0.0, 0.01 * shift] for _ in range(3)]}
    probe = {"layer": 2, "positions": ["final_prompt", "a_sum"], "n_examples": 8, "conditions": conds,
             "leak": {"curve": [{"words": w, "reduction": _ci(0.01 * w)} for w in (1, 6)],
                      "targets": {"inoc": {"reduction": _ci(0.03), "words": 6}}}}
    parts = FR.loss_parts_from_examples(conds, n_boot=200)
    n, i = np.array(conds["neutral"]["loss"]), np.array(conds["inoc"]["loss"])
    assert np.isclose(parts["inoc"]["total"]["mean"], (n - i).mean())
    assert np.isclose(parts["inoc"]["trait"]["mean"] + parts["inoc"]["content"]["mean"], (n - i).mean())
    done = FR.controls_probe_figures(probe, tmp_path, n_boot=200)
    assert set(done) == {FR.LOSS_SPLIT, FR.DCOS_PARTS, FR.DIAL}
    assert all((tmp_path / n).stat().st_size > 1000 for n in done)
