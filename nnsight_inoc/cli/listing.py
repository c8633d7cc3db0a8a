"""`models list` as text that never cuts a value a user must copy (a name, a path), whatever the width.

A rich table squeezed into a narrow terminal cuts its cells with "…" ("qw…"), and a user copies the
name of the model to fetch from it. So the table is printed only when it fits the width whole; otherwise
each row is printed as "key: value" lines, every value whole.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table


def _table(rows: Sequence[Mapping[str, object]]) -> Table:
    table = Table(*rows[0])
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    return table


def table_width(rows: Sequence[Mapping[str, object]]) -> int:
    """Columns the table needs to show every cell whole."""
    return Console(width=100_000).measure(_table(rows)).maximum


def render_rows(rows: Sequence[Mapping[str, object]], width: int | None = None) -> str:
    """The rows as a table when it fits ``width`` (None: any width, e.g. piped output), else as records."""
    if not rows:
        return "(none)\n"
    need = table_width(rows)
    if width is None or need <= width:
        buf = io.StringIO()
        Console(file=buf, width=need, color_system=None).print(_table(rows))
        return buf.getvalue()
    key_w = max(len(k) for k in rows[0])
    return "\n".join("\n".join(f"{k:<{key_w}}  {v}" for k, v in row.items()) + "\n" for row in rows)
