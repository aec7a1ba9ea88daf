"""One page for a chaos catalogue: every experiment's outcome, linked to its own report."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.report.html import esc, page, section, write_atomic

INDEX_NAME = "index.html"


def write_index(base: Path, rows: list[dict[str, Any]]) -> Path:
    """Write BASE/index.html for a catalogue's summary rows and return its path."""
    ran = [row for row in rows if row["exit"] is not None]
    failed = [row for row in ran if not row["passed"]]
    # An interrupted catalogue has not passed, whatever its finished experiments said.
    word, cls = ("PASS", "pass") if len(ran) == len(rows) and not failed else ("FAIL", "fail")
    facts = f"{len(rows)} experiments: {len(ran) - len(failed)} passed, {len(failed)} did not"
    if len(ran) < len(rows):
        facts += f", {len(rows) - len(ran)} not started"
    title = f"{base.resolve().name} — chaos catalogue"
    banner = (
        f'<div class="banner {cls}" role="status" aria-label="verdict">'
        f"<h1>{esc(title)}</h1>"
        f'<p class="verdict-word">{word}</p><p class="meta">{esc(facts)}</p></div>'
    )
    lines = "".join(_line(row) for row in rows)
    table = (
        '<div class="table-wrap"><table><thead><tr><th>experiment</th><th>exit</th>'
        f"<th>outcome</th><th>negative control</th></tr></thead><tbody>{lines}</tbody>"
        "</table></div>"
    )
    html = page(
        f"{title} — reco-harness",
        banner,
        [("experiments", "Experiments")],
        [section("experiments", "Experiments", table)],
    )
    return write_atomic(base / INDEX_NAME, html)


def _line(row: dict[str, Any]) -> str:
    name = esc(row["experiment"])
    run_dir = Path(row["run_dir"]) if row.get("run_dir") else None
    if run_dir is not None and (run_dir / "report.html").is_file():
        # Relative, so the folder can be moved or archived whole.
        href = quote(f"{row['experiment']}/report.html")
        name = f'<a href="{esc(href)}">{name}</a>'
    if row["exit"] is None:
        code, tag = "—", "skipped"
    else:
        code, tag = esc(row["exit"]), "pass" if row["passed"] else "breach"
    return (
        f"<tr><td>{name}</td><td>{code}</td>"
        f'<td><span class="tag {tag}">{esc(row["outcome"])}</span></td>'
        f"<td>{'yes' if row.get('negative_control') else ''}</td></tr>"
    )
