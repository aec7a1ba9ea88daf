"""A self-contained HTML report of a load or chaos run directory (inline CSS and SVG, no scripts).

``write_report(run_dir)`` writes ``run_dir/report.html``; every input file is optional and the
report says which ones were missing. ``render(load_run(run_dir))`` returns the HTML text.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.report.figures import (
    benchmarks_section,
    contract_section,
    endpoints_section,
    load_section,
    overlay,
    pipeline_section,
)
from harness.report.html import GENERATOR, esc, page, section, write_atomic
from harness.report.load import RunData, load_run
from harness.report.metadata import metadata_section
from harness.report.sections import (
    audit_section,
    banner,
    missing_section,
    resources_section,
    run_name,
    verdict_section,
)
from harness.runmeta import runs_below

REPORT_NAME = "report.html"
FALLBACK_NAME = "reco-report.html"  # when report.html is someone else's (Locust's --html)


class ReportError(Exception):
    """The run directory cannot be reported on (it does not exist or holds no run files)."""


def write_report(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Render ``run_dir`` to ``out`` (default RUN_DIR/report.html) and return the path written.

    Runners call this after every run, so a run that recorded nothing (its steady state did
    not hold) still gets a report saying so; only a missing directory is an error.
    """
    return save(read(run_dir, strict=False), out)


def read(run_dir: Path | str, strict: bool = True) -> RunData:
    """Read a run directory's inputs; ReportError when it is missing (or, if strict, empty)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ReportError(f"{root}: no such run directory")
    data = load_run(root)
    if strict and not data.found_anything:
        files = "verdict.json, timeline.jsonl, …"
        raise ReportError(f"{root}: no run files ({files}){runs_below(root)}")
    return data


def default_target(root: Path) -> Path:
    """RUN_DIR/report.html, unless that file exists and is not ours: never clobber it."""
    target = root / REPORT_NAME
    if target.exists():
        with open(target, encoding="utf-8", errors="replace") as fh:
            if GENERATOR not in fh.read(4096):
                return root / FALLBACK_NAME
    return target


def save(data: RunData, out: Path | str | None = None) -> Path:
    """Write the report of ``data`` atomically to ``out`` (default RUN_DIR/report.html)."""
    return write_atomic(Path(out) if out else default_target(data.root), render(data))


def render(data: RunData) -> str:
    """The report's HTML for the inputs in ``data``."""
    ov, _ = _safe(lambda: overlay(data))
    parts = [
        ("verdict", "Guardrails", lambda: verdict_section(data)),
        ("load", "Load over time", lambda: load_section(data, ov)),
        ("pipeline", "Pipeline", lambda: pipeline_section(data, ov)),
        ("audit", "Audit", lambda: audit_section(data)),
        ("resources", "Resources", lambda: resources_section(data)),
        ("endpoints", "Endpoints", lambda: endpoints_section(data)),
        ("contract", "Contract", lambda: contract_section(data)),
        ("benchmarks", "Benchmarks", lambda: benchmarks_section(data)),
        (
            "metadata",
            "Metadata",
            lambda: metadata_section(
                data.run, data.journal, data.summary, str(data.root), ov.t0 if ov else None
            ),
        ),
        ("missing", "Missing inputs", lambda: missing_section(data)),
    ]
    sections, nav = [], []
    for sid, label, build in parts:
        html, error = _safe(build)
        if error:  # one broken input must not cost the whole report
            html = section(
                sid,
                label,
                f'<p class="missing">This section could not be rendered: {esc(error)}</p>',
            )
        if html:
            sections.append(html)
            nav.append((sid, label))
    top, error = _safe(lambda: banner(data, _negative_control(data)))
    if error:
        top = f"<h1>{esc(run_name(data))}</h1><p>The verdict banner failed: {esc(error)}</p>"
    return page(f"{run_name(data)} — reco-harness report", top, nav, sections)


def _safe(build: Callable[[], Any]) -> tuple[Any, str | None]:
    """Run one section builder; on failure return the error instead of raising it."""
    try:
        return build(), None
    except Exception as exc:  # noqa: BLE001 - render the rest, name the failure in its place
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return None, f"{type(exc).__name__}: {exc} ({Path(frame.filename).name}:{frame.lineno})"


def _negative_control(data: RunData) -> dict | None:
    """The experiment's negative-control settings, when the run was one."""
    name = (data.journal or {}).get("experiment")
    if not name:
        return None
    try:
        from chaos.experiment import find

        return find(str(name)).negative_control or None
    except Exception:  # noqa: BLE001 - an experiment missing from this checkout is no error
        return None


__all__ = [
    "REPORT_NAME",
    "ReportError",
    "RunData",
    "load_run",
    "read",
    "render",
    "save",
    "write_report",
]
