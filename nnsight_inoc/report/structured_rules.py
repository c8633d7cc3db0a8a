"""C1 against a structured null (issue 22, item 4): the rule, pre-registered before any sweep.

The random-sphere null is a low bar (~1000 examples in 1536 dimensions: a trait-free "lawyer" prompt
passes it, -0.0042, null p 1.5e-15). The align summary's ``structured_null`` block
(:mod:`nnsight_inoc.stages.align_structured`) measures the same inoc - neutral contrast at the reporting
layer and ``a_sum`` along directions that are structured but not v. C1 is supported only when

1. the sphere rule passes (:func:`~.alignment_rules.fixed_contrast`: CI below 0, exact null p < ALPHA);
2. |delta cos along v| exceeds |delta cos| along every other registered trait's direction and every one
   of the leading principal components of the neutral unit gradients (point estimates; strictly greater,
   by :data:`MIN_MARGIN`); and
3. the inoc - neutral shift is beyond the trait-free prompts' own shift: for every trait-free prompt t
   measured (the loss-matched pool prompt ``lossmatch``, which must be there, and any neutral paraphrase),
   the inoc - t CI excludes 0 in the direction of inoc - neutral.

When the sphere rule passes but 2 or 3 fails, C1 is inconclusive and names the shortfall (which
direction beat v and by how much; which trait-free prompt v's shift does not exceed). A summary written
before the block existed is judged by the sphere rule alone, and C1 says the structured null was not
measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MIN_MARGIN = 0.0  # |dcos_v| must exceed every structured |dcos_u| by more than this (fixed before any sweep)
REQUIRED_TRAIT_FREE = ("lossmatch",)  # trait-free prompts that must have been measured
NOT_MEASURED = ("structured null (issue 22: other traits' directions, leading PCs, trait-free shifts) not measured "
                "in this run; judged against the random-sphere null only")


def _ci(e: Mapping[str, float]) -> str:
    return f"{e['diff_cos']:+.4f} [{e['lo']:+.4f}, {e['hi']:+.4f}]"


def structured_check(block: Any) -> tuple[bool, str, tuple[str, ...]] | None:
    """(passes, the numbers, shortfalls) of conditions 2 and 3 (module docstring); None when not measured."""
    if not isinstance(block, Mapping):
        return None
    if "error" in block:
        return False, f"structured null not computable: {block['error']}", (f"structured null: {block['error']}",)
    dv = block["v"]["diff_cos"]
    short: list[str] = []
    rivals: dict[str, Mapping[str, Any]] = {}
    others = block.get("other_traits")
    if isinstance(others, Mapping) and others:
        rivals.update({f"trait {t}": e for t, e in others.items()})
    else:
        short.append("other traits' directions not measured (extract/other_directions.pt)")
    pcs = block.get("pcs", {}).get("directions", {}) if isinstance(block.get("pcs"), Mapping) else {}
    rivals.update({f"neutral-gradient {k.upper()}": e for k, e in pcs.items()})
    beat = sorted(((n, e) for n, e in rivals.items() if abs(e["diff_cos"]) >= abs(dv) + MIN_MARGIN),
                  key=lambda x: -abs(x[1]["diff_cos"]))
    short += [f"{n}: |dcos| {abs(e['diff_cos']):.4f} >= |dcos along v| {abs(dv):.4f} (by {abs(e['diff_cos']) - abs(dv):.4f})"
              for n, e in beat]
    biggest = max(rivals.items(), key=lambda x: abs(x[1]["diff_cos"]), default=None)
    tf = block.get("trait_free", {}) if isinstance(block.get("trait_free"), Mapping) else {}
    short += [f"trait-free prompt {t} not measured" for t in REQUIRED_TRAIT_FREE if t not in tf]
    tf_words = []
    for t, e in tf.items():
        m = e["inoc_minus"]
        ok = m["hi"] < 0 if dv < 0 else m["lo"] > 0
        tf_words.append(f"{t} - neutral {_ci(e['shift'])}, inoc - {t} {_ci(m)}")
        if not ok:
            short.append(f"inoc - {t} {_ci(m)}: CI does not exclude 0 on the side of inoc - neutral ({dv:+.4f}); the "
                         f"shift is not beyond {t}'s own ({e['shift']['diff_cos']:+.4f})")
    nums = (f"structured null at layer {block['layer']}, {block['position']}: along v {_ci(block['v'])}; "
            f"{len(rivals)} structured directions"
            + (f", largest |dcos| {biggest[0]} {_ci(biggest[1])}" if biggest else "")
            + (f"; trait-free: {'; '.join(tf_words)}" if tf_words else ""))
    return not short, nums, tuple(short)
