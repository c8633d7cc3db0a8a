"""The content-leak control: per-example system prompts that give away part of what the answer says.

Issue 16: the SFT targets are the model's own neutral answers with the trait applied, so a
trait-free system prompt can lower their loss only by a hundredth of a nat, while the
inoculation prompt lowers it by 0.03 (ALL-CAPS) to 0.34 (Spanish) nats. A loss-matched control
that cannot reach the target's loss cannot decide anything. A content leak can: a system prompt
that quotes the first k words of the model's own UNTRAITED answer to the same user prompt
(ALL-CAPS: the original-case answer; Spanish: its English answer) explains the answer's content
but not its trait, and k is a dial from no reduction to most of it. The dial is set by
measurement (:mod:`nnsight_inoc.stages.leak`), never assumed: the issue's feasibility check saw
three quoted words raise the loss.

This module only builds the prompts (pure text); which k, and which base prompt, are decided in
the stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TEMPLATE = 'The answer begins: "{words}"'


def first_words(text: str, k: int) -> str:
    """The first ``k`` whitespace-separated words of ``text``, joined by single spaces (all when shorter)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return " ".join(text.split()[:k])


def leak_prompt(base: str, answer: str, k: int, template: str = DEFAULT_TEMPLATE) -> str:
    """``base`` followed by the template quoting the first ``k`` words of ``answer``; ``base`` itself for k = 0.

    ValueError when the template has no ``{words}`` field.
    """
    if "{words}" not in template:
        raise ValueError(f"the leak template must contain '{{words}}', got {template!r}")
    if k == 0:
        return base
    return f"{base} {template.format(words=first_words(answer, k))}"


@dataclass(frozen=True)
class Prompting:
    """A training condition's system prompt: one for every chat, or (``leak_words`` > 0) one per chat.

    ``base`` is the fixed prompt; with a leak, chat i gets ``leak_prompt(base, untraited[i], k)``
    where ``untraited[i]`` is the model's own untraited answer to chat i's user prompt.
    """

    base: str
    leak_words: int = 0
    template: str = DEFAULT_TEMPLATE

    @property
    def is_leak(self) -> bool:
        return self.leak_words > 0

    def systems(self, untraited: Sequence[str] | None) -> str | list[str]:
        """The base prompt, or one prompt per chat (``untraited`` answers in chat order; required for a leak)."""
        if not self.is_leak:
            return self.base
        if untraited is None:
            raise ValueError(f"a content-leak condition ({self.leak_words} words) needs the untraited answers")
        return [leak_prompt(self.base, a, self.leak_words, self.template) for a in untraited]

    def record(self) -> dict[str, object] | None:
        """What train.json, cond files and reports record besides the base prompt (None without a leak)."""
        return {"words": self.leak_words, "template": self.template} if self.is_leak else None
