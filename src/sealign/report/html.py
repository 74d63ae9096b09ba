"""A self-contained HTML report page: markdown tables, figures and audio players."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Example:
    """One utterance shown in the report: a spectrogram figure, labelled audio files, the
    reference text and, per label, what an ASR heard (``heard_by`` names the ASR)."""

    title: str
    figure: Path
    audio: dict[str, Path] = field(default_factory=dict)
    text: str = ""
    transcripts: dict[str, str] = field(default_factory=dict)
    heard_by: str = ""


def markdown_table_to_html(md: str) -> str:
    """The pipe tables that :mod:`sealign.eval.tables` writes, as an HTML table."""
    rows = [r.strip() for r in md.strip().splitlines() if r.strip().startswith("|")]
    rows = [r for r in rows if not set(r.replace("|", "").strip()) <= {"-", ":"}]
    if not rows:
        return ""
    cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows]
    head = "".join(f"<th>{c}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3} img{max-width:100%} .ex{margin:2em 0;border-top:1px solid #ddd}
.audio{display:flex;flex-wrap:wrap;gap:1em} .audio div{font-size:13px}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto}
"""


def write_report(
    path: str | Path,
    title: str,
    sections: list[tuple[str, str]],
    figures: list[tuple[str, Path]],
    examples: list[Example],
    notes: str = "",
) -> Path:
    """Write ``path`` (``index.html``). ``sections``: (heading, markdown table or text);
    paths are made relative to the page so the folder can be moved or zipped."""
    path = Path(path)
    root = path.parent

    def rel(p: Path) -> str:
        return html.escape(os.path.relpath(p, root))

    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    parts.append(f"<style>{_STYLE}</style><h1>{html.escape(title)}</h1>")
    if notes:
        parts.append(f"<pre>{html.escape(notes)}</pre>")
    for heading, body in sections:
        if heading:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
        table = markdown_table_to_html(body)
        parts.append(table or f"<pre>{html.escape(body)}</pre>")
    for caption, fig in figures:
        parts.append(f"<h2>{html.escape(caption)}</h2><img src='{rel(fig)}' alt=''>")
    if examples:
        parts.append("<h2>Examples</h2>")
    for ex in examples:
        parts.append(f"<div class='ex'><h3>{html.escape(ex.title)}</h3>")
        if ex.text:
            parts.append(f"<p><i>{html.escape(ex.text)}</i></p>")
        parts.append(f"<img src='{rel(ex.figure)}' alt=''><div class='audio'>")
        for label, a in ex.audio.items():
            heard = ex.transcripts.get(label)
            said = (
                f"<br><small>{html.escape(ex.heard_by or 'ASR')} heard: "
                f"<i>{html.escape(heard) or '(nothing)'}</i></small>"
                if heard is not None
                else ""
            )
            parts.append(
                f"<div>{html.escape(label)}<br><audio controls preload='none' "
                f"src='{rel(a)}'></audio>{said}</div>"
            )
        parts.append("</div></div>")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
