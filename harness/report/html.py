"""HTML building blocks: escaping, tables, number formats and the page skeleton."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from harness.report.styles import CSS

GENERATOR = '<meta name="generator" content="reco-harness report">'


def write_atomic(target: Path, text: str) -> Path:
    """Write ``text`` to ``target`` through a temporary file: a reader never sees half a page."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


def esc(value: Any) -> str:
    """Text safe for element content and quoted attributes."""
    return escape("" if value is None else str(value), quote=True)


def num(value: Any, digits: int = 4, unit: str = "") -> str:
    """A number for people: 4 significant digits, thousands grouped; '—' for nothing."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    else:
        return esc(value)
    return f"{text}{(' ' + unit) if unit else ''}"


def pct(ratio: float | None) -> str:
    """A ratio as a percentage with enough digits to tell 0.05 % from 0."""
    if ratio is None:
        return "—"
    if ratio == 0:
        return "0 %"
    return f"{ratio * 100:.3g} %"


def utc(t: Any) -> str:
    """Unix seconds (or an ISO string) as a UTC timestamp."""
    if isinstance(t, int | float) and not isinstance(t, bool):
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return esc(t) if t else "—"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    caption: str = "",
    row_header: bool = True,
    classes: Sequence[str] | None = None,
    numeric: Sequence[int] = (),
) -> str:
    """A table whose cells are already HTML; the first cell of each row is a row header."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = []
        for j, cell in enumerate(row):
            align = ' class="num"' if j in numeric else ""
            if j == 0 and row_header:
                cells.append(f'<th scope="row"{align}>{cell}</th>')
            else:
                cells.append(f"<td{align}>{cell}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    cap = f"<caption>{caption}</caption>" if caption else ""
    return (
        f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def pairs(items: Iterable[tuple[str, str]]) -> str:
    """A definition list of (term, HTML value) pairs."""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<dl class="pairs">{rows}</dl>'


def code(value: Any) -> str:
    """A command line or JSON value as inline code."""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    elif not isinstance(value, str):
        value = json.dumps(value, sort_keys=True)
    return f"<code>{esc(value)}</code>"


def ids(values: Iterable[Any], total: int | None = None) -> str:
    """A list of event ids, saying when the file kept only a sample of them."""
    shown = [str(v) for v in values]
    if not shown:
        return "none"
    note = ""
    if total is not None and total > len(shown):
        note = f'<p class="note">showing {len(shown)} of {total:,} (the audit keeps a sample)</p>'
    items = "".join(f"<li><code>{esc(v)}</code></li>" for v in shown)
    return f'<ul class="ids">{items}</ul>{note}'


def section(section_id: str, heading: str, body: str) -> str:
    return (
        f'<section id="{section_id}" aria-labelledby="{section_id}-h">'
        f'<h2 id="{section_id}-h">{esc(heading)}</h2>{body}</section>'
    )


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def page(title: str, banner: str, nav: list[tuple[str, str]], sections: list[str]) -> str:
    """The whole self-contained document: inline CSS, no scripts, no external resources."""
    links = "".join(f'<li><a href="#{sid}">{esc(label)}</a></li>' for sid, label in nav)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{GENERATOR}\n"
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header>{banner}<nav aria-label="Sections"><ul>{links}</ul></nav></header>\n'
        f"<main>\n{chr(10).join(sections)}\n</main>\n"
        f"<footer>Generated by reco-harness report at {generated}.</footer>\n"
        "</body>\n</html>\n"
    )
