"""Turn timelines and pipeline samples into plottable per-second series and per-endpoint totals."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.guardrails.histogram import Histogram
from harness.guardrails.timeline import AGGREGATED, Cell, Timeline
from harness.report.load import RunData

PERCENTILES = (50, 95, 99)
MAX_POINTS = 1200  # more points than a chart has pixels only adds noise and bytes


@dataclass(frozen=True)
class Series:
    """One line: (unix time, value) points; a None value breaks the line (no data)."""

    name: str
    points: tuple[tuple[float, float | None], ...]
    label: str = ""  # short direct label at the line's end (defaults to name)

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.points if v is not None]


def time_domain(data: RunData) -> tuple[float, float] | None:
    """The shared x axis: from the first to the last instant anything recorded."""
    starts = [s for s, _ in data.phases.values()] + [f["start"] for f in data.faults]
    ends = [e for _, e in data.phases.values()] + [f["end"] for f in data.faults]
    extent = data.timeline.extent() if data.timeline else None
    if extent:
        starts.append(extent[0])
        ends.append(extent[1])
    if data.pipeline:
        starts.append(data.pipeline[0]["t"])
        ends.append(data.pipeline[-1]["t"])
    if not starts:
        return None
    t0, t1 = min(starts), max([*ends, *starts])
    return (t0, t1) if t1 > t0 else (t0, t0 + 1.0)


def endpoints(timeline: Timeline) -> list[str]:
    """Endpoint names, busiest first."""
    totals: dict[str, int] = {}
    for cells in timeline.cells.values():
        for name, cell in cells.items():
            totals[name] = totals.get(name, 0) + cell.hist.n
    return sorted(totals, key=lambda n: (-totals[n], n))


def _seconds(timeline: Timeline) -> range:
    extent = timeline.extent()
    if not extent:
        return range(0)
    return range(int(extent[0]), int(extent[1]))


def bucket_seconds(timeline: Timeline) -> int:
    """Seconds per plotted point: 1, or more when a long run has more seconds than MAX_POINTS."""
    return max(1, math.ceil(len(_seconds(timeline)) / MAX_POINTS))


def _buckets(timeline: Timeline, width: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) windows of ``width`` seconds over the timeline's extent."""
    seconds = _seconds(timeline)
    return [(t, min(t + width, seconds.stop)) for t in range(seconds.start, seconds.stop, width)]


def _merged(timeline: Timeline, start: int, end: int, endpoint: str) -> Cell | None:
    """One endpoint's cell over [start, end): histograms merge exactly."""
    cells = [c for t in range(start, end) if (c := timeline.cells.get(t, {}).get(endpoint))]
    if len(cells) <= 1:
        return cells[0] if cells else None
    out = Cell()
    for cell in cells:
        out.merge(cell)
    return out


def rps(timeline: Timeline, endpoint: str | None = None, width: int = 1) -> Series:
    """Requests completed per second (every endpoint when ``endpoint`` is None)."""
    points: list[tuple[float, float | None]] = []
    for start, end in _buckets(timeline, width):
        n = sum(
            c.hist.n
            for t in range(start, end)
            for name, c in timeline.cells.get(t, {}).items()
            if endpoint in (None, name)
        )
        points.append(((start + end) / 2, n / (end - start)))  # drawn at the window's middle
    return Series(endpoint or "all endpoints", tuple(points))


def offered(timeline: Timeline, width: int = 1) -> Series | None:
    """The pacing's offered RPS (users x per-user rate), when the timeline recorded it."""
    points: list[tuple[float, float | None]] = []
    for start, end in _buckets(timeline, width):
        found = [timeline.meta.get(t, {}).get("offered_rps") for t in range(start, end)]
        values = [float(v) for v in found if isinstance(v, int | float)]
        points.append(((start + end) / 2, sum(values) / len(values) if values else None))
    if all(v is None for _, v in points):
        return None
    return Series("offered", tuple(points))


def error_ratio(timeline: Timeline, endpoint: str, width: int = 1) -> Series:
    """Failures plus sheds over requests, in percent (no requests: no point)."""
    points: list[tuple[float, float | None]] = []
    for start, end in _buckets(timeline, width):
        cell = _merged(timeline, start, end, endpoint)
        value = None
        if cell is not None and cell.hist.n:
            value = 100.0 * min(cell.fail + cell.shed, cell.hist.n) / cell.hist.n
        points.append(((start + end) / 2, value))
    return Series(endpoint, tuple(points))


def latency(timeline: Timeline, endpoint: str, p: float, width: int = 1) -> Series:
    """The p-th percentile latency (ms) per second (or window) from the recorded histograms."""
    points: list[tuple[float, float | None]] = []
    for start, end in _buckets(timeline, width):
        cell = _merged(timeline, start, end, endpoint)
        points.append(((start + end) / 2, cell.hist.percentile(p) if cell else None))
    return Series(f"p{p:g}", tuple(points))


def endpoint_totals(timeline: Timeline) -> list[dict]:
    """Per-endpoint count, failures, sheds, rps and percentiles over the whole timeline."""
    extent = timeline.extent()
    seconds = (extent[1] - extent[0]) if extent else 0.0
    merged: dict[str, Cell] = {}
    for cells in timeline.cells.values():
        for name, cell in cells.items():
            merged.setdefault(name, Cell()).merge(cell)
    order = endpoints(timeline)
    total = Cell()
    for cell in merged.values():
        total.merge(cell)
    return [_row(name, merged[name], seconds) for name in order] + (
        [_row(AGGREGATED, total, seconds)] if len(order) > 1 else []
    )


def _row(name: str, cell: Cell, seconds: float) -> dict:
    hist: Histogram = cell.hist
    row = {
        "endpoint": name,
        "count": hist.n,
        "failures": cell.fail,
        "sheds": cell.shed,
        "retries": cell.retry,
        "retries_refused": cell.refused,
        "error_ratio": (cell.fail + cell.shed) / hist.n if hist.n else None,
        "rps": hist.n / seconds if seconds else None,
        "mean_ms": hist.mean,
        "max_ms": hist.high if hist.n else None,
    }
    for p in (*PERCENTILES, 99.9):
        row[f"p{p:g}_ms"] = hist.percentile(p)
    return row


def pipeline(rows: list[dict], key: str, name: str | None = None, agg: str = "max") -> Series:
    """One pipeline measure over time; null samples (during faults) break the line.

    Past MAX_POINTS samples, windows of several seconds keep their max (so spikes stay
    visible) or their mean (``agg="mean"``, for rates).
    """
    points: list[tuple[float, float | None]] = []
    for row in rows:
        value = row.get(key)
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        points.append((row["t"], None if number is None else float(number)))
    if len(points) > MAX_POINTS:
        points = _thin(points, agg)
    return Series(name or key, tuple(points))


def _thin(points: list[tuple[float, float | None]], agg: str) -> list[tuple[float, float | None]]:
    t0, t1 = points[0][0], points[-1][0]
    width = max((t1 - t0) / MAX_POINTS, 1e-9)
    groups: dict[int, list[tuple[float, float | None]]] = {}
    for t, v in points:
        groups.setdefault(int((t - t0) / width), []).append((t, v))
    out: list[tuple[float, float | None]] = []
    for group in groups.values():
        values = [v for _, v in group if v is not None]
        middle = (group[0][0] + group[-1][0]) / 2
        if not values:
            out.append((middle, None))
        else:
            out.append((middle, max(values) if agg == "max" else sum(values) / len(values)))
    return out


def has_values(series: list[Series]) -> bool:
    """True when at least one series has one plottable point."""
    return any(s.values for s in series)
