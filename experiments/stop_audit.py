"""Did any published answer continue past a stop token? (issue 18, part C)

The published answers were generated with the tokenizer's single eos id (<|im_end|>) as the
only stop, then decoded with ``skip_special_tokens=True``. An answer in which the model emitted
<|endoftext|> (the model's other stop id) therefore ran on, and the saved text glues the text
before and after the deleted token. Text alone cannot show that; greedy decoding can:

1. Re-tokenise every saved answer and teacher-force the base model on prompt + answer +
   <|im_end|> (``chat.encode_chats``, the file's own system prompt, fp32).
2. At each answer position take the argmax. Where it is a special token other than <|im_end|>
   (<|endoftext|> above all) while the saved answer continues, greedy decoding emitted that
   token there and the old decoder deleted it: a glued answer. It counts as *confirmed* when
   the argmax equalled the saved token at every earlier position (the reproduction followed the
   original generation exactly up to there), as *possible* after an earlier disagreement.
3. The same test with <|im_end|> measures the method's own noise: an argmax of <|im_end|>
   inside a saved answer cannot have happened in the original run (it would have stopped).

Also counted, for every answer (teacher-forced or not): answers whose re-tokenised length
reaches the max_new_tokens cap (they were cut, not ended), and the argmax after the last token.

For a confirmed glued answer in a ``finetune/pre`` file the answer is cut at the special token,
re-scored with the trait's scorer, and the file's mean score and share above 0.5 recomputed.

Limits, stated in the output: post-training answers (``drift.json`` ``answers_head``) come from
the trained adapters, which are not published, so they are only length-counted; re-tokenised
text can differ from the generated tokens (leading/trailing whitespace was stripped, BPE may
split differently), which shows up as an early disagreement, not as a detection.

    python experiments/stop_audit.py --results results --out artifacts/stop_audit.json

Writes one JSON (atomic, rewritten after each file) with per-file counts and every detection.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from nnsight_inoc.data.traits import get_trait, score_texts
from nnsight_inoc.models.load import load_model
from nnsight_inoc.models.stops import special_token_ids
from nnsight_inoc.trace.chat import encode_chats

TRAITS = ("allcaps", "spanish", "politeness")


@dataclass(frozen=True)
class AnswerSet:
    """Answers generated under one system prompt, with the cap they were generated at."""

    label: str  # e.g. "allcaps/finetune/pre/0d65d68ae3aa1d7b.json"
    trait: str
    kind: str  # "pre" | "sft" | "post_head"
    system: str
    users: list[str]
    answers: list[str]
    cap: int  # max_new_tokens of the generation
    published: dict[str, Any] | None = None  # mean_score etc. of a pre file


def _config(results: Path, trait: str) -> dict[str, Any]:
    with (results / trait / "config.toml").open("rb") as f:
        return tomllib.load(f)


def collect(results: Path) -> list[AnswerSet]:
    """Every published answer set, in a fixed order (pre files, SFT files, post heads)."""
    sets: list[AnswerSet] = []
    for trait in TRAITS:
        cfg = _config(results, trait)
        drift_cap = int(cfg["extract"]["max_new_tokens"])  # drift answers use the extract length
        for path in sorted((results / trait / "finetune" / "pre").glob("*.json")):
            d = json.loads(path.read_text())
            b = d["behaviour"]
            if b["system_prompt"] != d["system"] or b["prompts"] != d["prompts"]:
                raise ValueError(f"{path}: behaviour does not match the file's system/prompts")
            sets.append(AnswerSet(str(path.relative_to(results)), trait, "pre", d["system"], b["prompts"],
                                  b["answers"], drift_cap,
                                  {k: b[k] for k in ("scores", "mean_score", "share_above_half", "n_unscored")}))
    for trait in TRAITS:
        path = results / trait / "sft_completions.json"
        if not path.is_file():
            continue  # ALL-CAPS transforms neutral answers; its completions are not published
        cfg = _config(results, trait)
        system = get_trait(trait).sft_system
        if system is None:
            raise ValueError(f"{path} exists but trait {trait} has no sft_system")
        d = json.loads(path.read_text())
        sets.append(AnswerSet(str(path.relative_to(results)), trait, "sft", system, d["prompts"],
                              d["source_answers"], int(cfg["data"]["sft_max_new_tokens"])))
    for trait in TRAITS:
        cfg = _config(results, trait)
        for path in sorted((results / trait / "finetune").glob("*/drift.json")):
            d = json.loads(path.read_text())
            for view in ("neutral_prompt", "training_prompt"):
                head = d[view]["post"]["answers_head"]
                sets.append(AnswerSet(f"{path.relative_to(results)}:{view}.post", trait, "post_head", "", [], head,
                                      int(cfg["extract"]["max_new_tokens"])))
    return sets


@torch.no_grad()
def teacher_force(model: Any, tok: Any, system: str, users: Sequence[str], answers: Sequence[str],
                  batch_size: int, watch: Sequence[int], im_end: int) -> list[dict[str, list]]:
    """Per answer: its re-tokenised ids + <|im_end|> and, predicting each of them, the argmax and
    the logit gaps (max logit minus the best ``watch`` logit; minus the <|im_end|> logit).

    All lists have length n + 1 for an n-token answer; prediction k is the greedy next token
    after the prompt and the first k answer tokens. Batched by token length, left padding (as
    the study generates), explicit position ids; the lm_head runs on answer positions only.
    Raises on a non-finite logit.
    """
    lengths = [len(tok(u, add_special_tokens=False)["input_ids"]) + len(tok(a, add_special_tokens=False)["input_ids"])
               for u, a in zip(users, answers)]
    order = sorted(range(len(users)), key=lambda i: lengths[i])
    watch_t = torch.tensor(sorted(watch), dtype=torch.long)
    out: list[dict[str, list] | None] = [None] * len(users)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = encode_chats(tok, system, [users[i] for i in idx], [answers[i] for i in idx], padding_side="left")
        hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids).last_hidden_state
        rows, cols = batch.target_mask.nonzero(as_tuple=True)  # row-major: each row's positions in order
        logits = model.lm_head(hidden[rows, cols]).float()
        if not torch.isfinite(logits).all():
            raise FloatingPointError(f"non-finite logits in a batch of {system!r} answers")
        top = logits.max(-1).values
        pred, gap_watch, gap_end = logits.argmax(-1), top - logits[:, watch_t].max(-1).values, top - logits[:, im_end]
        targets = batch.input_ids[rows, cols + 1]
        for r, i in enumerate(idx):
            sel = rows == r
            out[i] = {"actual": targets[sel].tolist(), "pred": pred[sel].tolist(),
                      "gap_special": gap_watch[sel].tolist(), "gap_im_end": gap_end[sel].tolist()}
    return [o for o in out if o is not None]


def classify(actual: list[int], pred: list[int], special: frozenset[int], im_end: int) -> dict[str, Any]:
    """What the argmax says about one answer (``actual`` ends with the appended <|im_end|>).

    first_divergence: first answer position where the argmax differs from the saved token
    (None when greedy reproduces the whole answer). glued: positions inside the answer (not
    the appended end) where the argmax is a special token other than <|im_end|>; im_end_inside:
    the same for <|im_end|> (method noise). end_pred: the argmax after the last answer token.
    """
    n = len(actual) - 1
    first = next((k for k in range(n) if pred[k] != actual[k]), None)
    glued = [k for k in range(n) if pred[k] in special and pred[k] != im_end]
    inside = [k for k in range(n) if pred[k] == im_end]
    return {
        "n_tokens": n,
        "first_divergence": first,
        "glued_positions": glued,
        "glued_tokens": [pred[k] for k in glued],
        "confirmed_glued": bool(glued) and (first is None or glued[0] <= first),
        "im_end_inside": inside,
        "im_end_inside_confirmed": bool(inside) and (first is None or inside[0] <= first),
        "end_pred": pred[n],
    }


def select(aset: AnswerSet, n_tokens: list[int], near_cap: int | None, sample: int, seed: int) -> list[int]:
    """Answers to teacher-force: every one within ``near_cap`` tokens of the cap (none when
    None), plus a uniform sample of ``sample`` of the others (all of them when fewer), seeded
    per file."""
    long = [] if near_cap is None else [i for i, t in enumerate(n_tokens) if t >= aset.cap - near_cap]
    rest = [i for i in range(len(n_tokens)) if i not in set(long)]
    g = torch.Generator().manual_seed(seed + int(hashlib.sha256(aset.label.encode()).hexdigest()[:8], 16))
    picked = [rest[j] for j in torch.randperm(len(rest), generator=g)[:sample].tolist()]
    return sorted(long + picked)


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _fixed_answers(tok: Any, aset: AnswerSet, confirmed: dict[int, dict[str, Any]]) -> list[str]:
    """The set's answers with every confirmed glued answer cut before its special token."""
    fixed = list(aset.answers)
    for i, c in confirmed.items():
        fixed[i] = tok.decode(c["actual"][: c["glued_positions"][0]], skip_special_tokens=False).strip()
    return fixed


def _rescore(aset: AnswerSet, fixed: list[str]) -> dict[str, Any]:
    """The pre file's numbers from the saved answers (checked against the published ones) and
    from the answers with glued continuations cut off."""
    assert aset.published is not None
    trait = get_trait(aset.trait)
    old, new = score_texts(trait, aset.answers), score_texts(trait, fixed)
    pub = [float("nan") if b is None else float(b) for b in aset.published["scores"]]
    same = all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(old.scores.tolist(), pub))
    return {"saved_answers_rescore_to_published": same, "published_mean_score": aset.published["mean_score"],
            "published_share_above_half": aset.published["share_above_half"], "fixed_mean_score": new.mean,
            "fixed_share_above_half": new.share_above_half,
            "n_answers_changed": sum(a != b for a, b in zip(aset.answers, fixed))}


@click.command()
@click.option("--results", "results_dir", type=click.Path(file_okay=False, exists=True), default="results",
              show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="artifacts/stop_audit.json",
              show_default=True)
@click.option("--model", "model_spec", default="qwen2.5-coder-1.5b-instruct", show_default=True)
@click.option("--pre-near-cap", default=3, show_default=True,
              help="Teacher-force every pre answer within this many tokens of the cap.")
@click.option("--pre-sample", default=10, show_default=True, help="Plus this many other pre answers per file (seeded).")
@click.option("--sft-sample", default=40, show_default=True, help="SFT answers per file (seeded uniform sample).")
@click.option("--margin", default=3.0, show_default=True,
              help="bf16 screen: flag an answer when a special token other than <|im_end|> comes within this "
                   "many logits of the top one at some answer position; flagged answers are redone in fp32.")
@click.option("--calibrate", default=16, show_default=True,
              help="Answers of the first pre file redone in fp32 to measure the bf16 screen's logit-gap error.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--seed", default=0, show_default=True)
def main(results_dir: str, out_path: str, model_spec: str, pre_near_cap: int, pre_sample: int, sft_sample: int,
         margin: float, calibrate: int, batch_size: int, threads: int, seed: int) -> None:
    torch.set_num_threads(threads)
    results, out_file = Path(results_dir), Path(out_path)
    loaded = load_model(model_spec, device="cpu", dtype="float32")
    tok = loaded.tokenizer
    special = special_token_ids(tok)
    im_end = int(tok.eos_token_id)
    watch = sorted(special - {im_end})
    names = dict(zip(sorted(special), tok.convert_ids_to_tokens(sorted(special))))
    sets = collect(results)
    report: dict[str, Any] = {
        "model": loaded.name, "model_sha256": loaded.sha256, "device": "cpu", "tokenizer_eos": im_end,
        "special_ids": names, "method": __doc__.split("\n\n")[1], "options": {
            "pre_near_cap": pre_near_cap, "pre_sample": pre_sample, "sft_sample": sft_sample, "margin": margin,
            "calibrate": calibrate, "batch_size": batch_size, "seed": seed},
        "results_sha256": {s.label: _sha(results / s.label.split(":")[0]) for s in sets},
        "files": {}, "detections": [], "seconds": {},
    }
    t_start = time.time()
    chosen: dict[str, list[int]] = {}
    for aset in sets:
        n_tok = [len(tok(a, add_special_tokens=False)["input_ids"]) for a in aset.answers]
        report["files"][aset.label] = {
            "kind": aset.kind, "trait": aset.trait, "system": aset.system, "cap": aset.cap, "n_answers": len(n_tok),
            "n_at_cap": sum(t >= aset.cap for t in n_tok),
            "n_within_3_below_cap": sum(aset.cap - 3 <= t < aset.cap for t in n_tok),
            "max_tokens": max(n_tok, default=0)}
        if aset.kind == "pre":
            chosen[aset.label] = select(aset, n_tok, pre_near_cap, pre_sample, seed)
        elif aset.kind == "sft":
            chosen[aset.label] = select(aset, n_tok, None, sft_sample, seed)
    by_label = {s.label: s for s in sets}

    # fp32 on a few answers first: the reference the bf16 screen's error is measured against
    first = next(s for s in sets if s.kind == "pre")
    calib: dict[str, Any] = {}
    if calibrate:
        t0 = time.time()
        ref = teacher_force(loaded.hf_model, tok, first.system, first.users[:calibrate], first.answers[:calibrate],
                            batch_size, watch, im_end)
        calib = {"file": first.label, "n": len(ref), "fp32": ref}
        report["seconds"]["calibrate_fp32"] = round(time.time() - t0, 1)

    model16 = loaded.hf_model.to(torch.bfloat16)  # in place: the fp32 copy is reloaded for the confirmations
    if calibrate:
        b16 = teacher_force(model16, tok, first.system, first.users[:calibrate], first.answers[:calibrate], batch_size,
                            watch, im_end)
        err_s = [abs(a - b) for r, q in zip(calib["fp32"], b16) for a, b in zip(r["gap_special"], q["gap_special"])]
        err_e = [abs(a - b) for r, q in zip(calib["fp32"], b16) for a, b in zip(r["gap_im_end"], q["gap_im_end"])]
        agree = [a == b for r, q in zip(calib["fp32"], b16) for a, b in zip(r["pred"], q["pred"])]
        report["calibration"] = {"file": first.label, "n_answers": calibrate, "n_positions": len(agree),
                                 "argmax_agreement": sum(agree) / len(agree), "max_abs_err_gap_special": max(err_s),
                                 "max_abs_err_gap_im_end": max(err_e), "margin": margin}
        click.echo(f"calibration: {report['calibration']}", err=True)
        if max(err_s) >= margin / 2:
            raise click.ClickException(f"bf16 screen error {max(err_s):.2f} is not well inside the margin {margin}")

    flagged: dict[str, list[int]] = {}
    t0 = time.time()
    for label, idx in chosen.items():
        aset, t1 = by_label[label], time.time()
        tf = teacher_force(model16, tok, aset.system, [aset.users[i] for i in idx], [aset.answers[i] for i in idx],
                           batch_size, watch, im_end)
        cls = [classify(r["actual"], r["pred"], special, im_end) for r in tf]
        n = [c["n_tokens"] for c in cls]
        min_gap = [min(r["gap_special"][:-1], default=float("inf")) for r in tf]
        flagged[label] = [i for i, g in zip(idx, min_gap) if g < margin]
        report["files"][label]["screen_bf16"] = {
            "teacher_forced": len(idx), "indices": idx, "seconds": round(time.time() - t1, 1),
            "n_reproduced_exactly": sum(c["first_divergence"] is None for c in cls),
            "n_glued_argmax": sum(bool(c["glued_positions"]) for c in cls),
            "n_im_end_inside_first_divergence": sum(c["im_end_inside_confirmed"] for c in cls),
            "n_end_pred_im_end": sum(c["end_pred"] == im_end for c in cls),
            "n_end_pred_other_special": sum(c["end_pred"] in special and c["end_pred"] != im_end for c in cls),
            "n_below_cap_end_pred_not_im_end": sum(k < aset.cap and c["end_pred"] != im_end for k, c in zip(n, cls)),
            "n_at_cap": sum(k >= aset.cap for k in n),
            "n_at_cap_end_pred_im_end": sum(k >= aset.cap and c["end_pred"] == im_end for k, c in zip(n, cls)),
            "min_gap_special": min(min_gap, default=None), "flagged": flagged[label]}
        report["seconds"]["screen_bf16"] = round(time.time() - t0, 1)
        _write(out_file, report)
        click.echo(f"screen {label}: {len(idx)} answers in {time.time() - t1:.0f}s, flagged {len(flagged[label])}, "
                   f"min gap {min(min_gap, default=None)}", err=True)

    del model16, loaded
    todo = {k: v for k, v in flagged.items() if v}
    if todo:
        t0 = time.time()
        model32 = load_model(model_spec, device="cpu", dtype="float32").hf_model
        for label, idx in todo.items():
            aset = by_label[label]
            tf = teacher_force(model32, tok, aset.system, [aset.users[i] for i in idx],
                               [aset.answers[i] for i in idx], batch_size, watch, im_end)
            confirmed = {}
            for i, r in zip(idx, tf):
                c = classify(r["actual"], r["pred"], special, im_end)
                if c["glued_positions"]:
                    k = c["glued_positions"][0]
                    report["detections"].append({
                        "file": label, "index": i, "user": aset.users[i], "confirmed": c["confirmed_glued"],
                        "position": k, "n_tokens": c["n_tokens"], "first_divergence": c["first_divergence"],
                        "token": names.get(c["glued_tokens"][0]), "gap_special_fp32": r["gap_special"][k],
                        "answer": aset.answers[i],
                        "answer_cut": tok.decode(r["actual"][:k], skip_special_tokens=False).strip()})
                    if c["confirmed_glued"]:
                        confirmed[i] = {**c, "actual": r["actual"]}
            report["files"][label]["confirm_fp32"] = {
                "teacher_forced": len(idx), "n_confirmed_glued": len(confirmed),
                "n_possible_glued": sum(d["file"] == label and not d["confirmed"] for d in report["detections"])}
            if aset.kind == "pre":
                report["files"][label]["rescoring"] = _rescore(aset, _fixed_answers(tok, aset, confirmed))
            _write(out_file, report)
        report["seconds"]["confirm_fp32"] = round(time.time() - t0, 1)
    for aset in sets:  # a pre file with nothing confirmed: its published numbers stand; check they rescore
        if aset.kind == "pre" and "rescoring" not in report["files"][aset.label]:
            report["files"][aset.label]["rescoring"] = _rescore(aset, list(aset.answers))
    report["seconds"]["total"] = round(time.time() - t_start, 1)
    _write(out_file, report)
    click.echo(f"wrote {out_file} ({report['seconds']['total']} s)")


if __name__ == "__main__":
    main()
