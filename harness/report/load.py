"""Read a run directory for the report; every file is optional and a bad one is noted, not fatal."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.guardrails.timeline import Timeline

# What each input adds to the report; shown when the file is absent.
INPUTS = {
    "verdict.json": "guardrail verdict (pass/fail, every check)",
    "timeline.jsonl": "per-second RPS, errors and latency per endpoint",
    "faults.json": "fault windows",
    "phases.json": "phase boundaries",
    "pipeline.jsonl": "outbox backlog, queue depth and consumer apply latency",
    "audit.json": "invariant audit (lost, duplicated, unexpected events)",
    "summary.json": "per-endpoint totals from the load run",
    "locust_stats.csv": "Locust's per-endpoint statistics",
    "contract.json": "contract test results",
    "run.json": "load run metadata (commit, versions, command line)",
    "journal.json": "chaos experiment journal",
}


@dataclass
class RunData:
    """Everything the report found in a run directory, plus what it missed and why."""

    root: Path
    verdict: dict | None = None
    timeline: Timeline | None = None
    pipeline: list[dict] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)
    audit: dict | None = None
    summary: dict | None = None
    locust_stats: list[dict] = field(default_factory=list)
    contract: dict | None = None
    benchmarks: dict[str, dict] = field(default_factory=dict)  # file name -> its "ratios"
    resources: dict | None = None  # load runs with a stack only: not listed as missing
    drift: dict | None = None
    run: dict | None = None
    journal: dict | None = None
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def found_anything(self) -> bool:
        return len(self.missing) < len(INPUTS) or bool(self.benchmarks)


def load_run(root: Path) -> RunData:
    """Read each input under ``root``: absent ones go to ``missing``, bad ones to ``problems``."""
    data = RunData(root=Path(root))
    data.verdict = _object(data, "verdict.json")
    data.audit = _object(data, "audit.json")
    data.summary = _object(data, "summary.json")
    data.run = _object(data, "run.json")
    data.journal = _object(data, "journal.json")
    data.contract = _contract(data)
    data.faults = _faults(data)
    data.phases = _phases(data)
    data.timeline = _timeline(data)
    data.pipeline = _pipeline(data)
    data.locust_stats = _locust_stats(data)
    data.benchmarks = _benchmarks(data)
    if (data.root / "resources.json").is_file():
        data.resources = _object(data, "resources.json")
    if (data.root / "drift.json").is_file():
        data.drift = _object(data, "drift.json")
    return data


def _read(data: RunData, name: str) -> Any:
    """Parsed JSON of ``name``, or None (noting whether it was absent or unreadable)."""
    path = data.root / name
    if not path.is_file():
        data.missing.append(name)
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        data.problems.append(f"{name}: cannot read: {exc}")
        return None


def _object(data: RunData, name: str) -> dict | None:
    value = _read(data, name)
    if value is not None and not isinstance(value, dict):
        data.problems.append(f"{name}: expected a JSON object, got {type(value).__name__}")
        return None
    return value


def _contract(data: RunData) -> dict | None:
    # contract.json by default; any contract*.json (e.g. contract-smoke.json) otherwise.
    if not (data.root / "contract.json").is_file():
        others = sorted(data.root.glob("contract*.json"))
        if others:
            return _object(data, others[0].name)
    return _object(data, "contract.json")


def _faults(data: RunData) -> list[dict]:
    value = _read(data, "faults.json")
    if value is None:
        return []
    if not isinstance(value, list):
        data.problems.append("faults.json: expected a list of fault windows")
        return []
    faults = []
    for i, item in enumerate(value):
        start = _number(item.get("start")) if isinstance(item, dict) else None
        if start is None:
            data.problems.append(f"faults.json: entry {i} has no numeric start; left out")
            continue
        end = _number(item.get("end"))
        faults.append({**item, "start": start, "end": end if end is not None else start})
    return sorted(faults, key=lambda f: f["start"])


def _phases(data: RunData) -> dict[str, tuple[float, float]]:
    value = _object(data, "phases.json") or {}
    phases = {}
    for name, span in value.items():
        pair = [_number(x) for x in span] if isinstance(span, list) and len(span) == 2 else []
        if len(pair) != 2 or None in pair:
            data.problems.append(f"phases.json: phase {name!r} is not [start, end]; left out")
            continue
        phases[str(name)] = (float(pair[0]), float(pair[1]))  # type: ignore[arg-type]
    return phases


def _lines(data: RunData, name: str) -> list[dict]:
    """JSON objects of a .jsonl file; bad lines are skipped and counted."""
    path = data.root / name
    if not path.is_file():
        data.missing.append(name)
        return []
    rows, bad = [], 0
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(row, dict) and _number(row.get("t")) is not None:
                    rows.append(row)
                else:
                    bad += 1
    except (OSError, UnicodeDecodeError) as exc:
        data.problems.append(f"{name}: cannot read: {exc}")
        return []
    if bad:
        data.problems.append(f"{name}: {bad} unreadable line(s) skipped")
    return rows


def _timeline(data: RunData) -> Timeline | None:
    rows = _lines(data, "timeline.jsonl")
    if not rows:
        return None
    timeline = Timeline()
    try:
        timeline.merge_rows(rows)
    except (KeyError, TypeError, ValueError) as exc:
        data.problems.append(f"timeline.jsonl: malformed endpoint data: {exc!r}")
        return None
    return timeline


def _pipeline(data: RunData) -> list[dict]:
    rows = _lines(data, "pipeline.jsonl")
    return sorted(({**r, "t": float(r["t"])} for r in rows), key=lambda r: r["t"])


def _locust_stats(data: RunData) -> list[dict]:
    path = data.root / "locust_stats.csv"
    if not path.is_file():
        data.missing.append(path.name)
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        data.problems.append(f"{path.name}: cannot read: {exc}")
        return []


def _benchmarks(data: RunData) -> dict[str, dict]:
    """Every other *.json holding a "ratios" object (benchmark ratio reports)."""
    found = {}
    for path in sorted(data.root.glob("*.json")):
        if path.name in INPUTS or path.name.startswith(("locust", "contract")):
            continue
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # not ours to judge: only files that parse and hold ratios matter here
        if isinstance(value, dict) and isinstance(value.get("ratios"), dict):
            found[path.name] = value["ratios"]
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
