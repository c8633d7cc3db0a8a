"""The prose of a model's answer: its text without code, for scorers that judge natural language.

Why: code is not written in English or Spanish, whatever its identifiers are, and a Spanish
answer with a code block is still Spanish. The language scorer reads only what this leaves.

Removed:
- fenced blocks (``` or ~~~), also one left open by an answer cut off at the token limit,
  except fences labelled as text (``markdown``, ``md``, ``text``, ``txt``, ``plaintext``) or
  data (``json``, ``yaml``, ``yml``), whose content is prose; in data fences the double quotes
  around strings are dropped, since they delimit values, not quotations;
- inline code (`...`) and LaTeX math (``\\( \\)``, ``\\[ \\]``, ``$$ $$``);
- code-like lines (:func:`is_code_line`).

Limits: the line rule is a heuristic. Code written like prose stays, and a prose line with
two code marks and fewer than two function words ("¿ArcSinh[Cosh[41]]?") goes. Comments
inside removed code go with it.
"""

from __future__ import annotations

import re

from nnsight_inoc.data.scorers.spanish_words import OTHER, SPANISH

PROSE_FENCES = frozenset({"markdown", "md", "text", "txt", "plaintext"})
DATA_FENCES = frozenset({"json", "yaml", "yml"})
# Keywords of common languages that are also English function words: no evidence of prose in a code line.
CODE_KEYWORDS = frozenset({
    "for", "in", "if", "else", "elif", "not", "and", "or", "is", "as", "from", "with", "while", "import",
    "return", "def", "class", "lambda", "yield", "try", "except", "pass", "break", "continue", "none", "true",
    "false", "select", "where", "order", "by", "group", "into", "values", "set", "delete", "update", "insert",
    "function", "var", "let", "const", "new", "this", "print", "len", "sum", "range", "int", "str", "float",
})
_PROSE_WORDS = (SPANISH | OTHER) - CODE_KEYWORDS
MIN_PROSE_WORDS = 2  # a line with code marks but at least this many function words is prose ("con p=0 y k=3")

_FENCE = re.compile(r"(```|~~~)[ \t]*([\w+#.-]*)[^\n]*(?:\n|\Z)(.*?)(?:\1|\Z)", re.DOTALL)
_SPANS = re.compile(r"`[^`\n]*`|\\\(.*?\\\)|\\\[.*?\\\]|\$\$.*?\$\$", re.DOTALL)
_CODE_START = re.compile(
    r"(?:def |class \w+\s*[:(]|import \w|from [\w.]+ import |return\b|const |let \w+\s*=|var \w+|function\b"
    r"|#include|print\(|console\.log|SELECT |INSERT INTO |UPDATE \w+ SET |DELETE FROM |CREATE TABLE "
    r"|for \w+(?:, ?\w+)* in .*:$|while .*:$|if .*:$|elif |else:|try:|except\b|@\w+|[{}]\s*$)"
)
_CODE_MARKS = re.compile(
    r"(?<![=!<>+\-*/])=(?![=>])|==|!=|->|=>|\+=|&&|\|\||;\s*$|[{}]|\w\(|\w\[|[^\W_]_[^\W_]|\w\.\w+\("
)
_WORD = re.compile(r"[^\W\d_]+")


def is_code_line(line: str) -> bool:
    """A line of code outside a fence: a code keyword at its start, or two or more code marks
    (``=``, ``==``, ``;`` at the end, braces, ``name(``, ``name[``, ``snake_case``, ``obj.method(``)
    with fewer than :data:`MIN_PROSE_WORDS` function words of two letters or more."""
    s = line.strip()
    if not s:
        return False
    if _CODE_START.match(s) is not None:
        return True
    if len(_CODE_MARKS.findall(s)) < 2:
        return False
    n_prose = sum(len(w) > 1 and w.lower() in _PROSE_WORDS for w in _WORD.findall(s))
    return n_prose < MIN_PROSE_WORDS


def _fence(m: re.Match[str]) -> str:
    tag, body = m.group(2).lower(), m.group(3)
    if tag in DATA_FENCES:
        return "\n" + body.replace('"', " ") + "\n"
    return "\n" + body + "\n" if tag in PROSE_FENCES else "\n"


def prose(text: str) -> str:
    """``text`` without code; lines keep their breaks."""
    no_spans = _SPANS.sub("\n", _FENCE.sub(_fence, text))
    return "\n".join(line for line in no_spans.split("\n") if not is_code_line(line))
