"""Click CLI: ``python cli.py <command>`` or the ``nnsight-inoc`` console script.

Each study command resolves one typed config (the run folder's own config.toml, or the defaults
for a new folder < preset < --config file keys < flags; core/runconfig.py), checks everything
that needs no weights (study.preflight), takes the run folder's lock (core/lock.py), and only
then loads the model, writes and runs its stage. Errors are one line (exit 2 for usage errors,
1 otherwise) unless ``--debug`` asks for the traceback (cli/errors.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from nnsight_inoc.cli import finetune as finetune_command  # the module stays nnsight_inoc.cli.finetune
from nnsight_inoc.cli.errors import CliError, handle_errors
from nnsight_inoc.cli.opening import command_line, opened, require_publish, resolve
from nnsight_inoc.cli.options import PUBLISH, WHICH, study_options
from nnsight_inoc.core.layout import BENCH_DIR, COMPARE_DIR


class _DebugAnywhere(click.Group):
    """The root group: ``--debug`` is taken wherever it stands (``cli.py extract --debug``, as after the group),
    because a user adds it to the command that just failed. Tokens after ``--`` are left alone."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            args = ["--debug"] + [a for a in args[:end] if a != "--debug"] + args[end:]
        return super().parse_args(ctx, args)


@click.group(cls=_DebugAnywhere, context_settings={"max_content_width": 120})
@click.option("--debug", is_flag=True, envvar="NNSIGHT_INOC_DEBUG",
              help="Show the full traceback of an error instead of one line [env NNSIGHT_INOC_DEBUG=1]; also "
                   "accepted after the command (`cli.py extract --debug`).")
def main(debug: bool) -> None:
    """nnsight_inoc: does inoculation prompting rotate training gradients away from a trait direction?

    The stages, in order: data build, extract, align, (transfer), finetune, drift, report; `run` does them all,
    reusing what is done. A first try on a CPU: `run --preset smoke` (every stage on a 135M model, about 6 minutes).
    Every stage command takes the study options (--config, --preset, --run-dir, ...; see `<command> --help`).
    """


@main.group()
def models() -> None:
    """List and fetch the offline models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON (for scripts).")
@handle_errors
def models_list(as_json: bool) -> None:
    """Show the offline presets and whether each is cached (a table on stdout, full width when piped; one
    "key  value" record per preset when a terminal is too narrow for the table, so no name is cut)."""
    import json

    from rich.console import Console

    from nnsight_inoc.cli.listing import render_rows
    from nnsight_inoc.models.load import list_presets

    rows = list_presets()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    term = Console()  # a terminal's width; piped output gets every column whole
    click.echo(render_rows(rows, term.width if term.is_terminal else None), nl=False)


@models.command("fetch")
@click.argument("name")
@click.option("--drop-gguf/--keep-gguf", default=None,
              help="After the verified conversion, delete the downloaded GGUF (1.1 GB for the study model) and keep "
                   "the float32 weights only; asked on a terminal when not given.")
@handle_errors
def models_fetch(name: str, drop_gguf: bool | None) -> None:
    """Download, verify (sha256) and convert a preset into the cache; no-op when already valid."""
    from nnsight_inoc.models.cache import fetch
    from nnsight_inoc.models.prune import drop_gguf as drop
    from nnsight_inoc.models.prune import gguf_in_cache

    click.echo(str(fetch(name)))
    gguf = gguf_in_cache(name)
    if gguf is None:
        return
    gb = gguf.stat().st_size / 1e9
    if drop_gguf is None and sys.stdin.isatty():
        drop_gguf = click.confirm(f"The conversion is verified; drop the {gb:.1f} GB GGUF {gguf} (a later fetch "
                                  "downloads it again if needed)?", default=False)
    if drop_gguf:
        click.echo(f"dropped {gguf}, {drop(name) / 1e9:.1f} GB freed")
    elif drop_gguf is None:
        click.echo(f"kept {gguf} ({gb:.1f} GB); `models fetch {name} --drop-gguf` deletes it", err=True)


@main.group()
def data() -> None:
    """Prompt splits: `data build` makes the disjoint direction, SFT and eval splits."""


@data.command("build")
@study_options
@handle_errors
def data_build(**opts: Any) -> None:
    """Build the three disjoint prompt splits and the data card into <run-dir>/data."""
    from nnsight_inoc.core import artifacts as A
    from nnsight_inoc.core.config import dump_toml
    from nnsight_inoc.core.layout import RunLayout
    from nnsight_inoc.core.lock import run_folder_lock
    from nnsight_inoc.study import ensure_splits, preflight

    r = resolve(opts)
    cfg, run_dir = r.cfg, r.run_dir
    changes = preflight(cfg, run_dir, origins=r.origins)  # nothing is written before this passes
    layout = RunLayout(run_dir)
    with run_folder_lock(run_dir, command_line()):
        changes = preflight(cfg, run_dir, origins=r.origins)  # again under the lock: nobody changed it meanwhile
        if not layout.config.is_file() or changes:
            A.write_text(layout.config, dump_toml(cfg))
        A.Provenance(layout.provenance, command_line(), sources=r.sources, config_changes=changes)
        splits = ensure_splits(cfg, run_dir)
    click.echo(
        f"direction {len(splits.direction)} (+{len(splits.direction_heldout)} held out), sft {len(splits.sft)}, "
        f"eval {len(splits.eval)}; sha256 {splits.sha256()[:16]}; card: {layout.data_card}"
    )


@main.command()
@study_options
@handle_errors
def extract(**opts: Any) -> None:
    """Build v(l) (promote minus suppress means) and run the held-out and monitoring checks."""
    from nnsight_inoc.stages.extract import run_extract

    with opened(opts) as study:
        run_extract(study)


@main.command()
@click.option("--condition", default="all", show_default=True,
              help="A configured condition name (neutral, inoc, explicit, ...), 'lossmatch' (the loss-matched "
                   "control, chosen here from a pool of trait-free prompts), or 'all'.")
@study_options
@handle_errors
def align(condition: str, **opts: Any) -> None:
    """Per-example gradient alignment cos(-g, v) under training-time system prompts, with controls.

    Needs `extract` (the direction v) in the run folder; writes align/ there (summary, per-example rows, plots).
    """
    from nnsight_inoc.stages.align import check_condition, run_align

    check_condition(resolve(opts).cfg, condition)  # a bad name costs a second, not a model load
    with opened(opts, needs="align") as study:
        run_align(study, condition)


@main.command()
@study_options
@handle_errors
def transfer(**opts: Any) -> None:
    """Cross-context transfer: <-grad L_P, grad J> of every training prompt P with the trait's log-odds J under
    the neutral test prompt and the drift panel, over LoRA weights at init (issue 16; local only)."""
    from nnsight_inoc.stages.transfer import run_transfer

    with opened(opts, needs="transfer") as study:
        out = run_transfer(study)
    click.echo(f"transfer of {len(out['conditions'])} training prompts written")


main.add_command(finetune_command.finetune)


@main.command()
@WHICH
@click.option("--summary-only", is_flag=True,
              help="Only summarise the runs that have drift.json (e.g. a GPU campaign that ran out of time); "
                   "the runs not run are listed in the summary and the report.")
@study_options
@handle_errors
def drift(which: str | None, summary_only: bool, **opts: Any) -> None:
    """Trait expression and projection before vs after finetuning, and whether alignment predicts drift."""
    from nnsight_inoc.stages.drift import run_drift
    from nnsight_inoc.stages.drift_summary import summarise_drift

    with opened(opts, needs="drift", summary_only=summary_only, weights=not summary_only) as study:  # a summary reads files only
        if summary_only:
            s = summarise_drift(study, which or study.cfg.finetune.which, partial=True)
            click.echo(f"summarised {s['n_runs']} finished runs; not run: {len(s['not_run'])} {s['not_run']}")
            return
        run_drift(study, which or study.cfg.finetune.which)


@main.command()
@click.option("--out-dir", type=click.Path(file_okay=False), help="Where to write (default: the run folder).")
@study_options
@handle_errors
def report(out_dir: str | None, **opts: Any) -> None:
    """Write report.md and a self-contained report.html (and report_appendix.md/.html, every table) from a run
    folder's JSON (no model needed)."""
    from nnsight_inoc.core.stage_inputs import check_run_folder
    from nnsight_inoc.report.sections import write_report

    # No config, lock or model: it reads the run folder's JSON and writes report.md/.html only.
    run_dir = resolve(opts, use_folder=False).run_dir
    require_publish(Path(out_dir) if out_dir else run_dir, opts.get("publish", False))
    check_run_folder(run_dir)
    md, htm = write_report(run_dir, Path(out_dir) if out_dir else None)
    click.echo(f"wrote {md} and {htm}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out-dir", type=click.Path(file_okay=False), default=str(COMPARE_DIR), show_default=True)
@PUBLISH
@handle_errors
def compare(run_dirs: tuple[str, ...], out_dir: str, publish: bool) -> None:
    """Cross-trait summary: alignment effect, drift effect and their relation per study, side by side."""
    from nnsight_inoc.report.cross_trait import write_cross_trait

    require_publish(Path(out_dir), publish)
    click.echo(f"wrote {write_cross_trait([Path(d) for d in run_dirs], Path(out_dir))}")


@main.command()
@click.option("--scale", type=click.Choice(["real", "7b", "both"]), default="both", show_default=True,
              help="The configured model, the Qwen2.5-7B shape with random weights, or both.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--words", default=90, show_default=True, help="Words per prompt and per completion.")
@click.option("--reps", default=5, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False), default=str(BENCH_DIR), show_default=True)
@study_options
@handle_errors
def bench(scale: str, batch_size: int, words: int, reps: int, out_dir: str, **opts: Any) -> None:
    """Time nnsight gradient capture vs raw hooks, LoRA steps and generation; FLOP utilisation vs matmul."""
    import torch

    from nnsight_inoc.core import artifacts as A
    from nnsight_inoc.core.config import dump_toml
    from nnsight_inoc.models.device import check_device
    from nnsight_inoc.models.load import load_model, resolve_device

    try:
        from perf.bench import qwen7b_shape, run_bench
    except ImportError:
        raise CliError("bench lives in the source checkout's perf/ folder: run it as "
                                   "`python cli.py bench` from the repository root", 2) from None

    cfg = resolve(opts, use_folder=False).cfg  # bench works on no run folder
    require_publish(Path(out_dir), opts.get("publish", False))
    check_device(cfg.model.device)
    device = resolve_device(cfg.model.device)
    models = {}
    loaded = load_model(cfg.model.name, device=device, dtype=cfg.model.dtype) if scale in ("real", "both") else None
    if loaded is not None:
        models[f"{loaded.name} ({cfg.model.dtype})"] = (loaded.hf_model, loaded.tokenizer)
    if scale in ("7b", "both"):
        if loaded is None:
            loaded = load_model(cfg.model.name, device="cpu", dtype="float32")  # only for its tokenizer
        models["qwen2.5-7b shape, random (bfloat16)"] = (qwen7b_shape(torch.bfloat16, device), loaded.tokenizer)
    result = run_bench(models, batch_size, words, reps)
    result.update(command=command_line(), config=dump_toml(cfg), versions=A.versions(), device=A.device_info(),
                  git=A.git_info(), date=time.strftime("%Y-%m-%d"))
    path = Path(out_dir) / "bench.json"
    A.write_json(path, result)
    for label, r in result["models"].items():
        click.echo(f"{label}: nnsight/raw {r['nnsight_over_raw']:.3f} (device-only raw {r['nnsight_over_raw_device']:.3f}), {r['tokens_per_s']:.0f} tok/s grad pass, "
                   f"util {r.get('grad_pass_util', float('nan')):.2f}, LoRA util {r.get('lora_util', float('nan')):.2f}, "
                   f"gen {r['generation_tokens_per_s']:.0f} tok/s")
    click.echo(f"wrote {path}")


@main.command()
@study_options
@handle_errors
def run(**opts: Any) -> None:
    """The study end to end: data, extract, align, finetune, drift, report; unchanged stages are reused."""
    from nnsight_inoc.core.progress import log
    from nnsight_inoc.pipeline import run_all

    t0 = time.time()
    executor = resolve(opts).cfg.execution.executor
    if executor not in ("sequential", "grouped"):  # before any stage runs, not after align
        raise click.UsageError(f"`run` trains in its own process, sequential or grouped; execution.executor = "
                               f"{executor!r} runs from `finetune --executor {executor}` after `align`")
    with opened(opts) as study:
        md = run_all(study)
    log(f"done in {time.time() - t0:.0f} s; results in {study.run_dir}; report: {md}")


if __name__ == "__main__":
    main()
