"""Metric sources the rules read: Locust timeline, server histograms and named values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.guardrails.expr import SERVER_METRICS, Expr
from harness.guardrails.prometheus import Scrapes, Series, by_endpoint, quantile
from harness.guardrails.timeline import Cell, Timeline, paced_throughput, saturation

Window = tuple[float, float]
# Counts that are 0, not "no data", in a window without requests.
ZERO_WITHOUT_REQUESTS = frozenset({"count", "rps", "fail_count", "shed_count", "retry_count"})


def _matches(endpoint: str, wanted: str) -> bool:
    """``GET /x`` matches exactly; ``/x`` matches the path under any method."""
    return endpoint == wanted or endpoint.split(" ", 1)[-1] == wanted


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


class LocustSource:
    """Client-side metrics from the per-second timeline (plus the run summary)."""

    name = "locust"
    timed = True
    time_unit_s = 0.001  # latencies in milliseconds

    def __init__(self, timeline: Timeline, summary: Mapping[str, Any] | None = None):
        self.timeline = timeline
        self.summary = dict(summary or {})

    def extent(self) -> Window | None:
        return self.timeline.extent()

    def endpoints(self, window: Window) -> list[str]:
        return sorted(n for n, c in self.timeline.window(*window).cells.items() if c.hist.n)

    def value(self, expr: Expr, endpoint: str | None, window: Window) -> float | None:
        metric = expr.metric
        if metric in ("knee_rps", "knee_users"):
            knee = self.summary.get("knee") or {}
            value = knee.get(metric.removeprefix("knee_"))
            return None if value is None else float(value)
        extent = self.extent()
        if extent is None:
            return None
        start, end = max(window[0], extent[0]), min(window[1], extent[1])
        if end <= start:
            return None
        win = self.timeline.window(start, end)
        if endpoint is None:
            cell = win.total()
        else:
            cell = Cell()
            for name, part in win.cells.items():
                if _matches(name, endpoint):
                    cell.merge(part)
        if metric in ("offered_rps", "throughput_ratio", "saturated_s"):
            if endpoint is not None:
                return None  # pacing is known per run, not per endpoint
            if metric == "saturated_s":
                return float(saturation(self.timeline, start, end)["saturated_s"])
            if metric == "offered_rps":
                return win.offered / win.duration if win.offered else None
            return paced_throughput(self.timeline, start, end)
        return _cell_metric(expr, cell, win.duration, self.timeline.scale)


def _cell_metric(expr: Expr, cell: Cell, duration: float, scale: int = 1) -> float | None:
    hist, metric = cell.hist, expr.metric
    if metric == "retry_refused_count":  # refused retries were never sent: no request needed
        return cell.refused / scale
    if hist.n == 0:
        return 0.0 if metric in ZERO_WITHOUT_REQUESTS else None
    values = {
        "avg": hist.mean,
        "min": hist.low,
        "max": hist.high,
        "count": hist.n / scale,
        "rps": hist.n / scale / duration,
        "fail_count": cell.fail / scale,
        "shed_count": cell.shed / scale,
        "fail_ratio": cell.fail / hist.n,
        "shed_ratio": cell.shed / hist.n,
        "error_ratio": (cell.fail + cell.shed) / hist.n,
        "retry_count": cell.retry / scale,
        # Retries per first attempt: what --retry-budget bounds (plus its floor).
        "retry_ratio": _ratio(cell.retry, hist.n - cell.retry),
    }
    if metric == "p":
        return hist.percentile(expr.percentile or 50.0)
    if metric == "shed_p":
        return cell.shed_hist.percentile(expr.percentile or 50.0)
    return values.get(metric)


class ServerSource:
    """Server-side metrics: the increase of the service's histograms between two scrapes."""

    name = "server"
    timed = True
    time_unit_s = 0.001

    def __init__(self, scrapes: Scrapes):
        self.scrapes = scrapes

    def extent(self) -> Window | None:
        return self.scrapes.extent()

    def _groups(self, window: Window) -> dict[str, dict[str, Series]]:
        series = self.scrapes.window(*window)
        return by_endpoint(series) if series else {}

    def endpoints(self, window: Window) -> list[str]:
        return sorted(self._groups(window))

    def value(self, expr: Expr, endpoint: str | None, window: Window) -> float | None:
        if expr.metric not in SERVER_METRICS:
            return None
        kinds: dict[str, Series] = {}
        for name, groups in self._groups(window).items():
            if endpoint is None or _matches(name, endpoint):
                for kind, series in groups.items():
                    kinds.setdefault(kind, Series()).add(series)
        total = Series()
        for series in kinds.values():
            total.add(series)
        n = total.count
        errors = kinds.get("error", Series()).count
        fail = kinds.get("fail", Series()).count + errors
        shed = kinds.get("shed", Series()).count
        duration = max(window[1] - window[0], 1e-9)
        metric = expr.metric
        if metric in ("count", "rps", "fail_count", "shed_count", "error_500_count"):
            return {
                "count": n,
                "rps": n / duration,
                "fail_count": fail,
                "shed_count": shed,
                "error_500_count": errors,
            }[metric]
        if n <= 0:
            return None
        if metric in ("p", "shed_p"):
            sample = total if metric == "p" else kinds.get("shed", Series())
            if sample.count <= 0:
                return None
            seconds = quantile((expr.percentile or 50.0) / 100.0, sample.buckets)
            return None if seconds is None else seconds * 1000.0
        if metric == "avg":
            return total.total / n * 1000.0
        return {"fail_ratio": fail / n, "shed_ratio": shed / n, "error_ratio": (fail + shed) / n}[
            metric
        ]


class NamedSource:
    """Named numbers (audit, contract, benchmark or any JSON object), optionally per scope."""

    timed = False

    def __init__(
        self,
        name: str,
        values: Mapping[str, Any],
        scopes: Mapping[str, Mapping[str, Any]] | None = None,
        time_unit_s: float | None = None,
    ):
        self.name = name
        self.values = dict(values)
        self.time_unit_s = time_unit_s
        if scopes is None:
            scopes = values.get("scopes") if isinstance(values.get("scopes"), Mapping) else None
        if scopes is None:
            scopes = {k: v for k, v in values.items() if isinstance(v, Mapping)}
        self.scopes = {str(k): dict(v) for k, v in scopes.items() if isinstance(v, Mapping)}

    def extent(self) -> Window | None:
        return None

    def endpoints(self, window: Window | None = None) -> list[str]:
        return sorted(self.scopes)

    def value(self, expr: Expr, endpoint: str | None, window: Window | None = None):
        data = self.values if endpoint is None else self.scopes.get(endpoint)
        if data is None:
            return None
        return lookup(data, expr.label)


def lookup(data: Mapping[str, Any], dotted: str) -> float | None:
    """Find a number by dotted path (``ratios.R_http.median``); booleans count as 0/1."""
    node: Any = data
    if dotted in data:
        node = data[dotted]
    else:
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
    if isinstance(node, bool):
        return float(node)
    if isinstance(node, int | float):
        return float(node)  # NaN stays NaN: a broken measurement is a breach, not "no data"
    if isinstance(node, list):
        return float(len(node))  # e.g. "lost": [ids...] counts the ids
    return None


def as_source(name: str, value: Any):
    """Accept a ready source object or a plain dict of named values."""
    if hasattr(value, "value") and hasattr(value, "endpoints"):
        return value
    if isinstance(value, Mapping):
        return NamedSource(name, value)
    if isinstance(value, Timeline):
        return LocustSource(value)
    if isinstance(value, Scrapes):
        return ServerSource(value)
    raise TypeError(f"source {name!r}: unsupported type {type(value).__name__}")
