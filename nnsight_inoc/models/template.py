"""What a chat template does with a system prompt: whether it has a system turn, its default one, folding.

Checked when the model loads (:func:`nnsight_inoc.models.load.load_model`), before its weights:
a template without a system role (Gemma's raise "System role not supported") used to fail with a
raw ``TemplateError`` deep inside a stage. ``model.system_role`` decides what happens then:

- ``"native"`` (default): the template's own system turn; a template without one is refused
  with one line that names the option;
- ``"fold"``: the system prompt goes at the start of the first user turn, then a blank line,
  as Gemma 3's own template does with a system message (``first_user_prefix``). Recorded in
  provenance, because the model then sees the prompt as user text.

Also here: the system prompt a template inserts when it is given none (Qwen2.5: "You are Qwen,
created by Alibaba Cloud. You are a helpful assistant."), so that this hidden default can be
shown and recorded instead of silently used (see ``trace.chat.prompt_ids``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nnsight_inoc.models.errors import ModelError, ModelInputError

SYSTEM_ROLES = ("native", "fold")
_SYSTEM_PROBE = "SYSTEM-PROBE-4f1c"
_USER_PROBE = "USER-PROBE-9b2e"
# Prepended to a template: a leading system message becomes the first user turn's opening paragraph.
# Jinja's `if` opens no scope, so the rebound `messages` is what the original template then reads.
FOLD_PREFIX = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages | length > 1 and messages[1]['role'] == 'user' and messages[0]['content'] -%}"
    "{%- set messages = [{'role': 'user', 'content': messages[0]['content'] ~ '\\n\\n' ~ messages[1]['content']}]"
    " + messages[2:] -%}"
    "{%- else -%}{%- set messages = messages[1:] -%}{%- endif -%}"
    "{%- endif -%}"
)


def _render(tok: Any, messages: list[dict[str, str]]) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def system_role_problem(tok: Any) -> str | None:
    """Why the tokenizer's chat template cannot carry a system prompt, or None when it can."""
    try:
        text = _render(tok, [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": _USER_PROBE}])
    except Exception as e:  # jinja2 TemplateError from raise_exception, or any template bug
        first = str(e).splitlines()[0] if str(e) else ""
        return f"it raised {type(e).__name__}: {first!r} for a system message"
    if _SYSTEM_PROBE not in text:
        return "it drops the system message"
    return None


def default_system(tok: Any) -> str | None:
    """The system prompt the template inserts when a chat has none, or None when it inserts nothing."""
    try:
        bare = _render(tok, [{"role": "user", "content": _USER_PROBE}])
        marked = _render(tok, [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": _USER_PROBE}])
    except Exception:
        return None
    if _SYSTEM_PROBE not in marked:
        return None
    pre, post = marked.split(_SYSTEM_PROBE, 1)
    if bare.startswith(pre) and bare.endswith(post) and len(bare) > len(pre) + len(post):
        return bare[len(pre) : len(bare) - len(post)]
    return None


def apply_system_role(tok: Any, mode: str, name: str) -> list[str]:
    """Make the tokenizer's template follow ``model.system_role``; returns notes for provenance.

    Raises :class:`ModelInputError` (one line naming the option) for ``"native"`` when the template
    has no system role, and for an unknown mode.
    """
    if mode not in SYSTEM_ROLES:
        raise ModelInputError(f"model.system_role = {mode!r}; use one of {', '.join(SYSTEM_ROLES)}")
    problem = system_role_problem(tok)
    if mode == "native":
        if problem is not None:
            raise ModelInputError(
                f"model {name!r} has a chat template without a system role ({problem}); set model.system_role = "
                "\"fold\" to put the system prompt at the start of the first user turn (what Gemma's own template "
                "does), or use a model whose template has a system role")
        return []
    if not isinstance(tok.chat_template, str):
        raise ModelError(f"model {name!r} has several named chat templates; model.system_role = 'fold' needs one")
    tok.chat_template = FOLD_PREFIX + tok.chat_template
    text = _render(tok, [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": _USER_PROBE}])
    if f"{_SYSTEM_PROBE}\n\n{_USER_PROBE}" not in text:
        raise ModelError(f"model {name!r}: folding the system prompt into the first user turn did not work")
    had = "had none" if problem is not None else "had one"
    return [f"system prompt folded into the first user turn, then a blank line (model.system_role = 'fold'; "
            f"the template's own system role: {had})"]


def check_folder_template(folder: Path, mode: str, name: str) -> None:
    """The system-role check of :func:`apply_system_role` on a local model folder, before anything else loads.

    Raises what :func:`apply_system_role` raises; a folder whose tokenizer does not load is left to
    the model loader, which reports it with its own error.
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception:
        return
    if tok.chat_template:
        apply_system_role(tok, mode, name)
