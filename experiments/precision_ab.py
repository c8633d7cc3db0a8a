"""Does a cheaper training precision change the study's results more than rerunning it does?

Issue 7 (study time): TF32 training matmuls (``finetune.train_autocast = "tf32"``) made the LoRA steps cheaper on an
H100. Whether that is allowed depends on the results, not the speed: this compares finished run folders
(``train.json`` + ``drift.json``) of a TEST set (e.g. TF32) and a RERUN set (the same fp32 runs again, same code
and seeds) against a REFERENCE set (the published fp32 runs), run by run:

* the loss curve (max and mean |delta| over the steps), the probe cosines (max |delta| over probes, layers and
  positions) and the probe loss;
* drift under the neutral test prompt and the trait score under the training prompt after training;
* time per LoRA step (``timing_s``).

The rerun's differences are the floor: GPU kernels are not bitwise reproducible, so a TEST difference within the
rerun's is no evidence of a precision effect. Also the study's headline contrast, inoculation minus neutral drift
per seed (C5), in each set.

    python experiments/precision_ab.py --reference results/allcaps/finetune \\
        --rerun results/bench/precision_ab/rerun_fp32 --test results/bench/precision_ab/tf32 \\
        --out results/bench/precision_ab/comparison.json
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import click
import numpy as np


def _runs(folder: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """run name -> (train.json, drift.json) for every finished run (both files present)."""
    out = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (d / "train.json").is_file() and (d / "drift.json").is_file():
            out[d.name] = (json.loads((d / "train.json").read_text()), json.loads((d / "drift.json").read_text()))
    return out


def compare_run(ref: tuple[dict[str, Any], dict[str, Any]], other: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """Differences of one run (other - reference); the two must be the same condition, seed, data and steps."""
    (rt, rd), (ot, od) = ref, other
    for key in ("condition", "seed", "system_prompt", "step_ids", "probe_ids"):
        if rt[key] != ot[key]:
            raise ValueError(f"runs differ in {key}; not comparing different runs")
    rl, ol = np.array(rt["losses"]), np.array(ot["losses"])
    rc = np.array([p["cos"] for p in rt["probes"]])
    oc = np.array([p["cos"] for p in ot["probes"]])
    return {
        "train_autocast": [rt["finetune_config"]["train_autocast"], ot["finetune_config"]["train_autocast"]],
        "loss_max_abs_diff": float(np.abs(ol - rl).max()),
        "loss_mean_abs_diff": float(np.abs(ol - rl).mean()),
        "loss_step0_abs_diff": float(abs(ol[0] - rl[0])),
        "final_probe_loss_diff": ot["probes"][-1]["loss"] - rt["probes"][-1]["loss"],
        "probe_cos_max_abs_diff": float(np.abs(oc - rc).max()),
        "drift_diff": od["neutral_prompt"]["drift"]["mean_score"] - rd["neutral_prompt"]["drift"]["mean_score"],
        "drift": [rd["neutral_prompt"]["drift"]["mean_score"], od["neutral_prompt"]["drift"]["mean_score"]],
        "train_prompt_post_diff": od["training_prompt"]["post"]["mean_score"] - rd["training_prompt"]["post"]["mean_score"],
        "step_s": [_step_s(rt), _step_s(ot)],
    }


def _step_s(train: dict[str, Any]) -> float | None:
    t = train.get("timing_s")
    return None if t is None else t["train_steps"] / len(train["losses"])


def _c5(runs: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, float]:
    """inoc - neutral drift under the neutral test prompt, per seed present in both."""
    drift = {name: d["neutral_prompt"]["drift"]["mean_score"] for name, (_, d) in runs.items()}
    seeds = sorted({int(n.rsplit("seed", 1)[1]) for n in drift})
    return {str(s): drift[f"inoc_seed{s}"] - drift[f"neutral_seed{s}"] for s in seeds
            if f"inoc_seed{s}" in drift and f"neutral_seed{s}" in drift}


def _summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    keys = ("loss_max_abs_diff", "loss_mean_abs_diff", "probe_cos_max_abs_diff", "drift_diff", "train_prompt_post_diff")
    out: dict[str, Any] = {"n_runs": len(rows)}
    for k in keys:
        vals = [r[k] for r in rows.values()]
        out[k] = {"max_abs": max(abs(v) for v in vals), "median_abs": statistics.median(abs(v) for v in vals)}
    # per side over the runs that recorded it (train.json has timing_s since the second GPU session)
    sides = {side: [r["step_s"][i] for r in rows.values() if r["step_s"][i] is not None]
             for i, side in enumerate(("reference", "this"))}
    out["step_s_median"] = {side: statistics.median(v) if v else None for side, v in sides.items()}
    return out


def compare(reference: Path, rerun: Path, test: Path) -> dict[str, Any]:
    ref, rer, tst = _runs(reference), _runs(rerun), _runs(test)
    if not rer or not tst:
        raise ValueError(f"no finished runs in {rerun if not rer else test}")
    missing = sorted((set(rer) | set(tst)) - set(ref))
    if missing:
        raise ValueError(f"runs without a reference in {reference}: {missing}")
    rows = {"rerun": {n: compare_run(ref[n], rer[n]) for n in rer}, "test": {n: compare_run(ref[n], tst[n]) for n in tst}}
    both = sorted(set(rer) & set(tst))
    return {
        "reference": str(reference), "rerun": str(rerun), "test": str(test),
        "note": "differences are (set - reference) per run; the rerun's are the run-to-run floor of the GPU kernels",
        "summary": {"rerun": _summary(rows["rerun"]), "test": _summary(rows["test"]),
                    "test_on_rerun_runs": _summary({n: rows["test"][n] for n in both})},
        "c5_inoc_minus_neutral_drift": {"reference": _c5({n: ref[n] for n in tst}), "rerun": _c5(rer), "test": _c5(tst)},
        "runs": rows,
    }


@click.command()
@click.option("--reference", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--rerun", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--test", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(reference: Path, rerun: Path, test: Path, out: Path) -> None:
    result = compare(reference, rerun, test)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("summary", "c5_inoc_minus_neutral_drift")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
