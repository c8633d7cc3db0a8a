"""How far does each training-time system prompt turn the SFT gradient away from v? (the README's example)

    python experiments/gradient_cosines_by_prompt.py RUN_DIR "You are a helpful assistant." "Be terse."

Needs `extract` in RUN_DIR (its config.toml is used). Prints, per prompt, the mean cos(-g, v) at the
reporting layer over the first 32 SFT examples (summed assistant tokens) with a 95% bootstrap CI, and
the mean SFT loss.
"""

import sys
from pathlib import Path

from nnsight_inoc import bootstrap_mean_ci_by_col, gradient_cosines, load_config, open_study, reporting_layer

run_dir, prompts = Path(sys.argv[1]), sys.argv[2:]
study = open_study(load_config(run_dir / "config.toml"), run_dir, "experiments/gradient_cosines_by_prompt.py")
layer = reporting_layer(study)
for system in prompts:
    m = gradient_cosines(study, system, n=32)  # .cos: (n, layers, positions), n = min(32, SFT examples); cos(-g, v)
    cos = m.cos[:, layer, m.positions.index("a_sum")].numpy()[:, None]
    mean, lo, hi = bootstrap_mean_ci_by_col(cos, n_boot=2000, rng=0)
    print(f"{system!r}: cos(-g, v) {mean[0]:+.4f} [{lo[0]:+.4f}, {hi[0]:+.4f}], loss {m.loss.mean():.3f}")
