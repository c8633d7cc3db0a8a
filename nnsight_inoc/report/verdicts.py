"""Verdict labels and the helpers both rule families share (alignment C1-C4, drift C5-C8).

Every rule returns a :class:`Verdict`: one of :data:`LABELS`, the numbers that decided it, and, when it
is inconclusive, what measured quantity fell short and by how much (issue 16: an inconclusive answer
names it). A Verdict unpacks like the ``(label, reason)`` pair rules returned before. Thresholds are
module constants so a change is visible in one place and in the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from nnsight_inoc.report.intervals_fmt import MAX_SHARE, fmt_share

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
LABELS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
ALPHA = 0.05  # level of every test (Holm-adjusted where a family of layers is tested)
MAX_LOSS_GAP_SHARE = 0.25  # |inoc - control loss| / |inoc - neutral loss| above this = incomplete match


@dataclass(frozen=True)
class Verdict:
    """A rule's result: ``label`` (one of :data:`LABELS`), ``reason`` (the numbers that decided it) and
    ``shortfall`` (for an inconclusive result: each measured quantity that fell short, and by how much).
    Unpacks and indexes as ``(label, reason)``."""

    label: str
    reason: str
    shortfall: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"verdict label must be one of {LABELS}, got {self.label!r}")

    def __iter__(self) -> Iterator[str]:
        return iter((self.label, self.reason))

    def __getitem__(self, i: int) -> str:
        return (self.label, self.reason)[i]

    def __len__(self) -> int:
        return 2


def as_verdict(v: Verdict | tuple[str, str] | str) -> Verdict:
    """A Verdict from a Verdict, a (label, reason) pair, or a bare label (no reason, no shortfall)."""
    if isinstance(v, Verdict):
        return v
    if isinstance(v, str):
        return Verdict(v, "")
    return Verdict(v[0], v[1])


def fmt_p(p: float) -> str:
    """p-values span 1e-30 (exact null) to 1; fixed decimals would print 0.000 for both 1e-4 and 1e-30."""
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def layer_ranges(layers: Sequence[int]) -> str:
    """'12–27' instead of sixteen numbers; readers compare ranges across contrasts."""
    if not layers:
        return "none"
    out, start, prev = [], layers[0], layers[0]
    for x in list(layers[1:]) + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}" if start == prev else f"{start}–{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(out)


def control_of(align: Mapping[str, Any]) -> str:
    """The loss-matched control the comparison uses: the content leak matched to inoc (``leak_inoc``) when
    its contrast was measured, else today's pool prompt (``lossmatch``); see :mod:`.controls`."""
    return "leak_inoc" if "inoc-leak_inoc" in align["contrasts"] else "lossmatch"


def loss_gap_share(align: Mapping[str, Any], control: str | None = None) -> float:
    """|inoc - control| / |inoc - neutral| mean SFT loss on the studied examples: 0 = fully matched.
    ``control`` defaults to :func:`control_of`."""
    control = control or control_of(align)
    gap = align["contrasts"][f"inoc-{control}"]["loss"]["diff"]
    full = align["contrasts"]["inoc-neutral"]["loss"]["diff"]
    if full == 0:
        raise ValueError("inoc and neutral have identical mean loss; the loss-match share is undefined")
    return abs(gap) / abs(full)


def loss_gap_words(align: Mapping[str, Any], control: str | None = None) -> str:
    """The share of :func:`loss_gap_share` as printed: a percentage, or both losses when inoc - neutral is
    near zero (a percentage of almost nothing is not a number a reader can use)."""
    control = control or control_of(align)
    return fmt_share(align["contrasts"][f"inoc-{control}"]["loss"]["diff"],
                     align["contrasts"]["inoc-neutral"]["loss"]["diff"], "nats")  # callers add "of inoc - neutral"


def loss_match_shortfall(share: float, control: str) -> str:
    """The shortfall line of an incomplete loss match; a share over :data:`~.intervals_fmt.MAX_SHARE` (the inoc -
    neutral gap near zero) is said in words, not as a percentage of almost nothing."""
    if share > MAX_SHARE:
        return (f"loss match ({control}): leaves over {MAX_SHARE:g} times the inoc - neutral loss gap (that gap is "
                f"near zero, so no percentage), limit {MAX_LOSS_GAP_SHARE:.0%}")
    return (f"loss match ({control}): leaves {share:.0%} of the inoc - neutral loss gap, limit "
            f"{MAX_LOSS_GAP_SHARE:.0%} ({(share - MAX_LOSS_GAP_SHARE) * 100:.0f} percentage points too much)")


def cap(verdict: Verdict | tuple[str, str], condition: bool, why: str, shortfall: str | None = None) -> Verdict:
    """At most inconclusive when ``condition`` holds, saying why it was capped and what the uncapped
    verdict was; ``shortfall`` (default ``why``) is added to the verdict's shortfalls."""
    v = as_verdict(verdict)
    if not condition:
        return v
    short = v.shortfall + (shortfall or why,)
    if v.label != INCONCLUSIVE:
        return Verdict(INCONCLUSIVE, f"capped at inconclusive: {why} (uncapped: {v.label}: {v.reason})", short)
    return Verdict(INCONCLUSIVE, f"{why}; inconclusive before the cap too: {v.reason}", short)
