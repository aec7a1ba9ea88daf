"""Server-side latency from Prometheus histograms: parse, diff two scrapes, estimate quantiles."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DURATION = "flask_http_request_duration_seconds"
# Probes and scrapes are not user traffic; leave them out of global and per-endpoint scopes.
IGNORED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "<unmatched>"})
SHED_STATUSES = frozenset({"429", "503"})

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_RULE_ARG = re.compile(r"<(?:[^:>]+:)?[^>]+>")


def endpoint_name(method: str, path: str) -> str:
    """Name a Flask route like the load generator names requests (``<user_id>`` -> ``[id]``)."""
    return f"{method} {_RULE_ARG.sub('[id]', path)}"


@dataclass
class Series:
    """One histogram series: cumulative bucket counts by upper bound, sum and count."""

    buckets: dict[float, float] = field(default_factory=dict)
    total: float = 0.0
    count: float = 0.0

    def minus(self, before: Series | None) -> Series:
        """The increase since ``before``; a counter reset means the whole value is new."""
        if before is None or self.count < before.count:
            return Series(dict(self.buckets), self.total, self.count)
        return Series(
            {le: v - before.buckets.get(le, 0.0) for le, v in self.buckets.items()},
            self.total - before.total,
            self.count - before.count,
        )

    def add(self, other: Series) -> Series:
        for le, v in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + v
        self.total += other.total
        self.count += other.count
        return self

    def to_dict(self) -> dict:
        return {
            "buckets": {_le_text(le): v for le, v in sorted(self.buckets.items())},
            "sum": self.total,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Series:
        buckets = {float(le): float(v) for le, v in data.get("buckets", {}).items()}
        return cls(buckets, float(data.get("sum", 0.0)), float(data.get("count", 0.0)))


def _le_text(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(le)


def _labels(text: str | None) -> dict[str, str]:
    return {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(text or "")}


def parse(text: str, family: str = DURATION) -> dict[tuple[str, str, str], Series]:
    """Read one histogram family from the text exposition, keyed by (method, path, status)."""
    out: dict[tuple[str, str, str], Series] = {}
    for line in text.splitlines():
        if not line.startswith(family):
            continue
        match = _SAMPLE.match(line.strip())
        if not match:
            continue
        name, labels_text, raw = match.groups()
        labels = _labels(labels_text)
        key = (labels.get("method", ""), labels.get("path", ""), labels.get("status", ""))
        try:
            value = float(raw)
        except ValueError:
            continue
        series = out.setdefault(key, Series())
        if name == f"{family}_bucket":
            series.buckets[float(labels.get("le", "+Inf"))] = value
        elif name == f"{family}_sum":
            series.total = value
        elif name == f"{family}_count":
            series.count = value
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Estimate a quantile like PromQL ``histogram_quantile`` (linear within a bucket)."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        cumulative = buckets[le]
        if cumulative >= rank:
            if math.isinf(le):
                # Past the last finite bound: report that bound, as Prometheus does.
                return bounds[-2] if len(bounds) > 1 else None
            inside = cumulative - below
            if inside <= 0:
                return le
            return lower + (le - lower) * (rank - below) / inside
        lower, below = le, cumulative
    return None


def unbounded_thresholds(rules: Iterable[Any], bounds: Iterable[float]) -> list[str]:
    """Server quantile rules whose threshold is not a bucket bound (their verdict is unsafe).

    With the threshold at a bound, an interpolated quantile lies above it exactly when the
    true one does; between bounds, a true p99 of 245 ms can be estimated at 114 ms.
    """
    finite = sorted(b for b in bounds if not math.isinf(b))
    problems = []
    for rule in rules:
        if rule.source != "server":
            continue
        for expr in rule.exprs:
            if expr.metric not in ("p", "shed_p"):
                continue
            seconds = expr.threshold(0.001) / 1000.0  # the server source counts milliseconds
            if not any(math.isclose(seconds, b, rel_tol=1e-9) for b in finite):
                problems.append(
                    f"line {rule.line}: rule {rule.name!r}: {expr.text!r}: the server's "
                    f"histogram has no bucket bound at {seconds * 1000:g} ms (bounds: "
                    f"{', '.join(f'{b * 1000:g}' for b in finite)} ms), so an estimate "
                    "could pass a true quantile above it"
                )
    return problems


@dataclass
class Snapshot:
    """One scrape: when, and the histogram series it saw."""

    t: float
    series: dict[tuple[str, str, str], Series]

    def to_dict(self) -> dict:
        return {
            "t": self.t,
            "series": [
                {"method": m, "path": p, "status": s, **v.to_dict()}
                for (m, p, s), v in sorted(self.series.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        series = {
            (row["method"], row["path"], row["status"]): Series.from_dict(row)
            for row in data.get("series", [])
        }
        return cls(float(data["t"]), series)


class Scrapes:
    """Scrapes taken during a run; a window is the difference of the two around it."""

    def __init__(self, snapshots: Iterable[Snapshot] = ()):
        self.snapshots = sorted(snapshots, key=lambda s: s.t)

    @classmethod
    def read_jsonl(cls, path: Path) -> Scrapes:
        with open(path, encoding="utf-8") as fh:
            return cls(Snapshot.from_dict(json.loads(line)) for line in fh if line.strip())

    def extent(self) -> tuple[float, float] | None:
        if len(self.snapshots) < 2:
            return None
        return self.snapshots[0].t, self.snapshots[-1].t

    def window(self, start: float, end: float) -> dict[tuple[str, str, str], Series] | None:
        """Series increase between the last scrape at/before start and the first at/after end."""
        if len(self.snapshots) < 2:
            return None
        before = [s for s in self.snapshots if s.t <= start + 0.5]
        after = [s for s in self.snapshots if s.t >= end - 0.5]
        first = before[-1] if before else self.snapshots[0]
        last = after[0] if after else self.snapshots[-1]
        if last.t <= first.t:
            return None
        return {k: v.minus(first.series.get(k)) for k, v in last.series.items()}


def by_endpoint(series: dict[tuple[str, str, str], Series]) -> dict[str, dict[str, Series]]:
    """Group series into endpoints, each split by status into ok, shed, fail and error.

    ``error`` is a 500 (a bug: nothing the service answers on purpose); ``fail`` the other 5xx
    but 503 (e.g. 504 outcome unknown). Failure metrics count both.
    """
    out: dict[str, dict[str, Series]] = {}
    for (method, path, status), value in series.items():
        if path in IGNORED_PATHS or value.count <= 0:
            continue
        kind = (
            "shed" if status in SHED_STATUSES
            else "error" if status == "500"
            else "fail" if status >= "500"
            else "ok"
        )  # fmt: skip
        groups = out.setdefault(endpoint_name(method, path), {})
        groups.setdefault(kind, Series()).add(value)
    return out
