"""Find the sources of a results directory (load run, chaos run, benchmark or contract output)."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET  # noqa: S405 - parses our own tools' JUnit files
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.guardrails.prometheus import Scrapes
from harness.guardrails.rules import GuardrailError
from harness.guardrails.sources import LocustSource, NamedSource, ServerSource
from harness.guardrails.timeline import Timeline

TIMELINE = "timeline.jsonl"
SERVER = "server_metrics.jsonl"
SUMMARY = "summary.json"
PHASES = "phases.json"
RUN = "run.json"
# Our own outputs are never sources.
NOT_SOURCES = frozenset({"verdict.json", RUN, SUMMARY, PHASES, "knee.json"})


@dataclass
class Results:
    """Sources plus what the engine needs to place phases: their windows and the profile."""

    sources: Mapping[str, Any]
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)
    profile: str | None = None
    # Sources this kind of run cannot produce, recorded by the run (JUDGED_WITHOUT): their
    # rules are out of its scope, so judging it again reproduces its verdict.
    without_sources: frozenset[str] = frozenset()
    # What the run recorded against a pass (summary.json, run.json): judged again the same.
    errors: list[str] = field(default_factory=list)
    interrupted: str | None = None
    aborted: str | None = None


class _LazySources(Mapping):
    """Load each source file only when a rule asks for it (a bad file fails only its rules)."""

    def __init__(self, root: Path):
        self.root = root
        self._cache: dict[str, Any] = {}

    def _candidates(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if (self.root / TIMELINE).exists():
            found["locust"] = self.root / TIMELINE
        else:
            history = sorted(self.root.glob("*_stats_history.csv"))
            if history:
                found["locust"] = history[0]
        if (self.root / SERVER).exists():
            found["server"] = self.root / SERVER
        for path in sorted(self.root.glob("*.json")):
            if path.name in NOT_SOURCES or path.name.startswith("locust"):
                continue  # our outputs and Locust's own JSON are not named-value sources
            stem = path.stem
            if stem.startswith("benchmark"):
                found.setdefault("benchmark", path)
            elif stem.startswith("contract"):
                found.setdefault("contract", path)
            else:
                found.setdefault(stem, path)
        for path in sorted(self.root.glob("contract*.xml")):
            found.setdefault("contract", path)
        return found

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            path = self._candidates().get(name)
            if path is None:
                raise KeyError(name)
            self._cache[name] = load_source(name, path)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._candidates())

    def __len__(self) -> int:
        return len(self._candidates())


def load_results(root: str | Path) -> Results:
    """Describe a results directory: lazily loaded sources, recorded phases and profile."""
    root = Path(root)
    if not root.is_dir():
        raise GuardrailError(root, None, "results directory not found")
    phases = {k: (float(v[0]), float(v[1])) for k, v in _json(root / PHASES, {}).items()}
    run = _json(root / RUN, {})
    summary = _json(root / SUMMARY, {})
    profile = run.get("profile") or summary.get("profile")
    # The summary's scope is a plain Locust run's. A run.json means a harness run (load run,
    # chaos, bench) around Locust, with data of its own: only its own record narrows it.
    without = run.get(JUDGED_WITHOUT, []) if run else summary.get(JUDGED_WITHOUT, [])
    errors = [str(e) for e in [*summary.get(ERRORS, []), *run.get(ERRORS, [])]]
    return Results(
        _LazySources(root), phases, profile, frozenset(without), errors,
        summary.get("interrupted"), summary.get("aborted"),
    )  # fmt: skip


RULES_KEY = "guardrails"  # run.json: the rule file that judged the run
JUDGED_WITHOUT = "judged_without"  # run.json or summary.json: sources out of the run's scope
ERRORS = "errors"  # summary.json or run.json: why the run has no verdict (harness errors)


def rules_record(path: str | Path) -> dict[str, str]:
    """The run.json entry naming the rule file that judged a run (read by recorded_rules)."""
    return {RULES_KEY: str(Path(path).resolve())}


def recorded_rules(root: str | Path) -> Path | None:
    """The rule file a run recorded in its run.json as the one that judged it, if any."""
    run = _json(Path(root) / RUN, {})
    recorded = run.get(RULES_KEY) if isinstance(run, dict) else None
    if not recorded:
        return None
    path = Path(recorded)
    if not path.is_file():
        raise GuardrailError(
            Path(root) / RUN,
            None,
            f"the run was judged by {recorded}, which is gone: pass --guardrails FILE",
        )
    return path


def _json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GuardrailError(path, None, f"unreadable JSON: {exc}") from None


def load_source(name: str, path: Path) -> Any:
    """Build one source from its file; raise GuardrailError when the file is unreadable."""
    try:
        if path.name == TIMELINE:
            return LocustSource(Timeline.read_jsonl(path), _json(path.parent / SUMMARY, {}))
        if path.name.endswith("_stats_history.csv"):
            return LocustSource(timeline_from_stats_history(path))
        if path.name == SERVER:
            return ServerSource(Scrapes.read_jsonl(path))
        if path.suffix == ".xml":
            return junit_source(name, path)
        data = _json(path, {})
        if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
            return benchmark_source(name, data)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object of named values")
        return NamedSource(name, data)
    except GuardrailError:
        raise
    except (OSError, ValueError, KeyError, TypeError, ET.ParseError) as exc:
        raise GuardrailError(path, None, f"cannot read source {name!r}: {exc}") from None


def benchmark_source(name: str, data: Mapping[str, Any]) -> NamedSource:
    """pytest-benchmark JSON: one scope per benchmark, stats in seconds, extra_info included."""
    scopes = {}
    for bench in data["benchmarks"]:
        stats = dict(bench.get("stats", {}))
        values = {**stats, **dict(bench.get("extra_info", {}))}
        if "mean" in stats:
            values.setdefault("avg", stats["mean"])
        if "median" in stats:
            values.setdefault("med", stats["median"])
        scopes[bench.get("name") or bench.get("fullname")] = values
    return NamedSource(name, {"count": len(scopes)}, scopes, time_unit_s=1.0)


def junit_source(name: str, path: Path) -> NamedSource:
    """JUnit XML (Schemathesis, pytest): totals plus one scope per test case."""
    root = ET.parse(path).getroot()  # noqa: S314 - local files written by our own tools
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {"tests": 0.0, "failures": 0.0, "errors": 0.0, "skipped": 0.0}
    scopes: dict[str, dict[str, float]] = {}
    for suite in suites:
        for key in totals:
            totals[key] += float(suite.get(key, 0) or 0)
        for case in suite.iter("testcase"):
            failed = case.find("failure") is not None or case.find("error") is not None
            scopes[case.get("name", "?")] = {
                "failed": float(failed),
                "time": float(case.get("time", 0) or 0),
            }
    run = totals["tests"] - totals["skipped"]
    totals["passed"] = run - totals["failures"] - totals["errors"]
    # No test ran: no ratio at all (a rule on it is "no data"), never a perfect 0 %.
    values: dict[str, float | None] = dict(totals)
    values["fail_ratio"] = (totals["failures"] + totals["errors"]) / run if run else None
    return NamedSource(name, values, scopes, time_unit_s=1.0)


_PERCENTILE_COLUMNS = (
    "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%",
)  # fmt: skip
# Each request becomes SCALE weighted samples so a second's tail (99.99%) survives.
SCALE = 10_000


def timeline_from_stats_history(path: Path) -> Timeline:
    """Approximate a per-second timeline from Locust's ``--csv`` stats history.

    Counts come from the deltas of the total columns; each second's requests are spread
    over that row's percentile points (Locust's rolling window), weighted so that the tail
    is kept. Percentiles over long windows are close, not exact: prefer our own timeline.
    """
    timeline = Timeline()
    timeline.scale = SCALE
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    has_entries = any(r.get("Name") != "Aggregated" for r in rows)
    previous: dict[str, tuple[float, float]] = {}
    for row in rows:
        name = row.get("Name", "")
        t = float(row["Timestamp"])
        if not has_entries or name == "Aggregated":
            timeline.set_meta(t, users=int(row.get("User Count") or 0))
            if has_entries:
                continue
        endpoint = f"{row.get('Type', '')} {name}".strip()
        total = float(row.get("Total Request Count") or 0)
        failed = float(row.get("Total Failure Count") or 0)
        before_total, before_failed = previous.get(endpoint, (0.0, 0.0))
        previous[endpoint] = (total, failed)
        new, new_failed = int(total - before_total), int(failed - before_failed)
        if new <= 0:
            continue
        points = [
            (float(c[:-1]) / 100, value)
            for c in _PERCENTILE_COLUMNS
            if (value := _number(row.get(c))) is not None
        ]
        if not points:
            points = [(1.0, _number(row.get("Total Median Response Time")) or 0.0)]
        below = 0.0
        for q, value in points:
            times = round(new * (q - below) * SCALE)
            if times > 0:
                timeline.record(t, endpoint, value, times=times)
            below = q
        if new_failed > 0:
            timeline.add_failures(t, endpoint, new_failed * SCALE)
    return timeline


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None
