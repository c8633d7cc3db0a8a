"""Turn a GPU campaign's bundles into results/<study>/: summarise the finished runs here, copy, write reports.

    python gpu/publish.py BUNDLE_DIR allcaps:all spanish:main

BUNDLE_DIR holds the `<study>.tar.gz` files `gpu/campaign.py` returned. For each `study:which` (which may
join several with '+', e.g. allcaps:all+steering):
1. unpack the run folder into a scratch folder;
2. `cli.py drift --summary-only --which WHICH` (once per joined value) there, on this machine's CPU (the summary needs no GPU; the
   runs it summarises and the ones not run are listed in finetune_summary.json and the report);
3. copy it to results/<study>/, leaving out per-condition gradient tensors, adapters, claims and markers. When
   results/<study>/ already holds an earlier align stage (allcaps: published before the campaign, with its
   per-example rows), only the finetune outputs and the workers' provenance are added;
4. `cli.py report --run-dir results/<study> --publish` (writing into results/ needs --publish).
Why a script: the published numbers must come from a command a reader can rerun, not from hand copying.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SKIP_SUFFIXES = (".pt", ".safetensors")
SKIP_NAMES = {"claims", "adapter", ".prep_done", ".prep_failed", ".lock"}
# Kept although .pt: the directions a later session's runs of the same sweep probe and project onto (issue 23:
# a sweep continued across sessions starts from the published folder; about 0.5 and 1 MB).
KEEP_NAMES = {"directions.pt", "other_directions.pt"}


def _ignore(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n not in KEEP_NAMES and (n in SKIP_NAMES or n.startswith(".adapter")
                                                        or n.endswith(SKIP_SUFFIXES))]


def study_config(study: str) -> str:
    """The config a campaign study ran with: gpu/<study>_gpu.toml (the presets' GPU configs), else gpu/<study>.toml
    (issue 23's decisive sweeps). FileNotFoundError naming both when neither exists."""
    for cand in (Path(f"gpu/{study}_gpu.toml"), Path(f"gpu/{study}.toml")):
        if cand.is_file():
            return str(cand)
    raise FileNotFoundError(f"no gpu/{study}_gpu.toml or gpu/{study}.toml")


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "cli.py", *args], check=True)


def publish(bundle_dir: Path, study: str, which: str, scratch: Path) -> Path:
    with tarfile.open(bundle_dir / f"{study}.tar.gz") as tar:
        tar.extractall(scratch, filter="data")
    run = scratch / study
    for w in which.split("+"):  # e.g. all+steering: the prompt conditions' summary and the steering one
        cli("drift", "--summary-only", "--which", w, "--config", study_config(study), "--device", "cpu",
            "--run-dir", str(run))
    out = Path("results") / study
    if (out / "align" / "rows.csv.gz").is_file() and not (run / "align" / "rows.csv.gz").is_file():
        if (out / "finetune").exists():
            shutil.rmtree(out / "finetune")
        shutil.copytree(run / "finetune", out / "finetune", ignore=_ignore)
        for p in run.glob("provenance.worker*.json"):
            shutil.copy2(p, out / p.name)
    else:
        readme = (out / "README.md").read_text() if (out / "README.md").is_file() else None  # hand-written: kept
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(run, out, ignore=_ignore)
        if readme is not None:
            (out / "README.md").write_text(readme)
    cli("report", "--run-dir", str(out), "--publish")
    return out


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    bundle_dir = Path(argv[0])
    with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
        for spec in argv[1:]:
            study, _, which = spec.partition(":")
            print(f"published {publish(bundle_dir, study, which or 'all', Path(tmp))}")


if __name__ == "__main__":
    main(sys.argv[1:])
