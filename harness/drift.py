"""Latency drift over a long run: each endpoint's p99 late in the run against early in it.

``summarise(timeline, phases)`` compares the client timeline's ``early`` and ``late`` windows
(the soak's phases, else the plateau's first and last quarter) into ``drift.json``, the
guardrail source ``drift``. ``p99_drift`` is the late p99's excess over the early one as a
share of the early one; p99s under ``FLOOR_MS`` count as ``FLOOR_MS`` there, so a few
milliseconds of scheduler noise on a fast endpoint are not a drift (the bar: the
late p99 within 10–20 % of the early one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.guardrails.timeline import Cell, Timeline
from harness.resources import Window, windows

FLOOR_MS = 25.0
TOTAL = "Aggregated"


def _compare(early: Cell, late: Cell) -> dict[str, Any] | None:
    first, last = early.hist.percentile(99), late.hist.percentile(99)
    if first is None or last is None:
        return None
    return {
        "p99_early_ms": round(first, 2),
        "p99_late_ms": round(last, 2),
        "p99_drift": round((last - first) / max(first, FLOOR_MS), 4),
        "requests_early": early.hist.n,
        "requests_late": late.hist.n,
    }


def summarise(timeline: Timeline, phases: Mapping[str, Window]) -> dict[str, Any]:
    """Per endpoint and in total: early and late p99 and the drift between them."""
    result: dict[str, Any] = {"floor_ms": FLOOR_MS, "scopes": {}}
    chosen = windows(phases, timeline.extent())
    if chosen is None:
        return result
    early, late = (timeline.window(*w) for w in chosen)
    result["windows"] = {"early": list(chosen[0]), "late": list(chosen[1])}
    cells = {
        name: (early.cells[name], late.cells[name]) for name in early.cells if name in late.cells
    }
    cells[TOTAL] = (early.total(), late.total())
    for name, (first, last) in sorted(cells.items()):
        compared = _compare(first, last)
        if compared is not None:
            result["scopes"][name] = compared
    drifts = [s["p99_drift"] for s in result["scopes"].values()]
    if drifts:
        result["p99_drift"] = max(drifts)
    return result
