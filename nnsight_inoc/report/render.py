"""Rendering report blocks as Markdown (plots linked) and as one self-contained HTML file (plots inlined).

A block is a tuple: ("h1"|"h2"|"h3"|"p"|"code", text), ("ul", [items]), ("table", header, rows),
("img", path) or ("verdict", id, claim, label, reason). Both renderers read the same list, so
the two files cannot disagree.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

Block = tuple  # ("h1"|"h2"|"p"|"code"|"ul"|"table"|"img"|"verdict", ...)


def render_md(blocks: list[Block], out_dir: Path) -> str:
    """Markdown with plots linked relative to the report (they stay files)."""
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "code":
            out.append(f"```\n{b[1]}\n```")
        elif kind == "ul":
            out.append("\n".join(f"- {x}" for x in b[1]))
        elif kind == "table":
            rows = [b[1], ["---"] * len(b[1])] + b[2]
            out.append("\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows))
        elif kind == "img":
            rel = os.path.relpath(b[1], out_dir)
            out.append(f"![{b[1].name}]({rel})" if b[1].is_file() else f"*Plot missing: {rel}*")
        elif kind == "verdict":
            out.append(f"- **{b[1]}** {b[2]}: **{b[3]}**. {b[4]}")
    return "\n\n".join(out) + "\n"


def render_html(blocks: list[Block]) -> str:
    """One file: every plot inlined as a base64 data URI, every text escaped."""
    e, body = html.escape, []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "code":
            body.append(f"<pre><code>{e(b[1])}</code></pre>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(c)}</th>" for c in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "img":
            if b[1].is_file():
                data = base64.b64encode(b[1].read_bytes()).decode()
                body.append(f'<figure><img alt="{e(b[1].name)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(b[1].name)}</figcaption></figure>")
            else:
                body.append(f"<p><em>Plot missing: {e(b[1].name)}</em></p>")
        elif kind == "verdict":
            cls = b[3].split(" (")[0].replace(" ", "-")  # "not supported (meaningless: smoke run)": not-supported
            body.append(f'<p class="v"><strong>{e(b[1])}</strong> {e(b[2])}: '
                        f'<strong class="{e(cls)}">{e(b[3])}</strong>. {e(b[4])}</p>')
    css = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.2em .5em}"
           "img{max-width:100%}pre{background:#f4f4f4;padding:.5em;overflow-x:auto}"
           ".supported{color:#070}.not-supported{color:#a00}.inconclusive{color:#a60}")
    title = e(blocks[0][1]) if blocks and blocks[0][0] == "h1" else "report"
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>{css}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")
