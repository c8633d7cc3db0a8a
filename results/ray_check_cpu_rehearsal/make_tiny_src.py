"""The tiny study the CPU rehearsal of gpu/ray_check.sh trains: a random Qwen2 (tests/_tiny.py), hand-made splits,
extract and ``align --condition all`` done (they make the SFT answers), no finetune runs.

    python results/ray_check_cpu_rehearsal/make_tiny_src.py DEST

Writes DEST/run (RUN_SRC) and DEST/cfg.toml (CFG: the tests' tiny config with ``model.device = "auto"``, so that
a Ray task under a declared GPU share resolves to the CPU; the numbers mean nothing). Run from the checkout root.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout root: tests/ is imported from there

from nnsight_inoc.core.config import apply_overrides, dump_toml  # noqa: E402
from nnsight_inoc.stages.align import run_align  # noqa: E402
from nnsight_inoc.stages.extract import run_extract  # noqa: E402
from nnsight_inoc.study import open_study  # noqa: E402
from tests._study import tiny_study_folder  # noqa: E402


def main(dest: Path) -> None:
    dest.mkdir(parents=True)
    cfg, run_dir = tiny_study_folder(dest)
    cfg = apply_overrides(cfg, {"model.device": "auto"})
    study = open_study(cfg, run_dir, "ray_check CPU rehearsal source")
    run_extract(study)
    run_align(study, "all")
    (dest / "cfg.toml").write_text(dump_toml(cfg))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
