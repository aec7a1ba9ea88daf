"""A per-second, per-endpoint record of a load run: counts, failures, sheds and latency."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.guardrails.histogram import Histogram

AGGREGATED = "Aggregated"
OUTCOMES = ("ok", "fail", "shed")


@dataclass
class Cell:
    """One endpoint during one second (or any window): latency plus failure and shed counts."""

    hist: Histogram = field(default_factory=Histogram)
    fail: int = 0
    shed: int = 0
    # Latency of the shed responses alone: shedding must stay cheap under overload.
    shed_hist: Histogram = field(default_factory=Histogram)
    # Requests that were client retries (counted in hist too), and retries the client's retry
    # budget refused (never sent, so in no histogram).
    retry: int = 0
    refused: int = 0

    def merge(self, other: Cell) -> Cell:
        self.hist.merge(other.hist)
        self.fail += other.fail
        self.shed += other.shed
        self.shed_hist.merge(other.shed_hist)
        self.retry += other.retry
        self.refused += other.refused
        return self

    def to_dict(self) -> dict:
        out = {**self.hist.to_dict(), "fail": self.fail, "shed": self.shed}
        if self.shed_hist.n:
            out["shed_hist"] = self.shed_hist.to_dict()
        if self.retry or self.refused:  # most seconds have neither: keep the lines short
            out.update(retry=self.retry, refused=self.refused)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Cell:
        return cls(
            Histogram.from_dict(data),
            int(data.get("fail", 0)),
            int(data.get("shed", 0)),
            Histogram.from_dict(data.get("shed_hist") or {}),
            int(data.get("retry", 0)),
            int(data.get("refused", 0)),
        )


@dataclass
class Window:
    """Everything recorded between two instants, ready for metric computation."""

    start: float
    end: float
    cells: dict[str, Cell]
    offered: float  # requests the pacing asked for (users x per-user rate, summed per second)
    seconds: int

    @property
    def duration(self) -> float:
        return max(self.end - self.start, 1e-9)

    def total(self) -> Cell:
        out = Cell()
        for cell in self.cells.values():
            out.merge(cell)
        return out


class Timeline:
    """Rows keyed by unix second; mergeable across Locust workers."""

    def __init__(self) -> None:
        self.cells: dict[int, dict[str, Cell]] = {}
        self.meta: dict[int, dict] = {}
        self.scale = 1  # samples per request (weighted timelines rebuilt from Locust's CSV)

    # -- recording --------------------------------------------------------------------
    def _cell(self, t: float, endpoint: str) -> Cell:
        second = self.cells.setdefault(int(t), {})
        cell = second.get(endpoint)
        if cell is None:
            cell = second[endpoint] = Cell()
        return cell

    def record(
        self,
        t: float,
        endpoint: str,
        ms: float,
        outcome: str = "ok",
        times: int = 1,
        retry: bool = False,
    ):
        """Count one finished request at unix time ``t`` (``retry``: a client retry)."""
        cell = self._cell(t, endpoint)
        cell.hist.add(ms, times)
        if retry:
            cell.retry += times
        if outcome == "fail":
            cell.fail += times
        elif outcome == "shed":
            cell.shed += times
            cell.shed_hist.add(ms, times)

    def refuse(self, t: float, endpoint: str) -> None:
        """Count one retry the client's retry budget refused (not sent) at unix time ``t``."""
        self._cell(t, endpoint).refused += 1

    def add_failures(self, t: float, endpoint: str, count: int) -> None:
        """Mark already-recorded requests as failed (when latency and outcome come apart)."""
        self._cell(t, endpoint).fail += count

    def set_meta(self, t: float, **values: float) -> None:
        """Attach per-second facts about the generator (users, offered rps, cpu)."""
        self.meta.setdefault(int(t), {}).update(values)

    # -- transport between workers and the master ---------------------------------------
    def pop_rows(self, before: float | None = None) -> list[dict]:
        """Remove and serialise complete seconds (all of them when ``before`` is None)."""
        keys = sorted(k for k in self.cells if before is None or k < int(before))
        rows = [self._row(k) for k in keys]
        for k in keys:
            del self.cells[k]
        return rows

    def merge_rows(self, rows: Iterable[dict]) -> None:
        """Add serialised rows (from a worker or a file) into this timeline."""
        for row in rows:
            t = int(row["t"])
            second = self.cells.setdefault(t, {})
            for name, data in row.get("endpoints", {}).items():
                cell = Cell.from_dict(data)
                if name in second:
                    second[name].merge(cell)
                else:
                    second[name] = cell
            extra = {k: v for k, v in row.items() if k not in ("t", "endpoints")}
            if extra:
                self.meta.setdefault(t, {}).update(extra)

    def _row(self, t: int) -> dict:
        row = {"t": t, **self.meta.get(t, {})}
        row["endpoints"] = {n: c.to_dict() for n, c in sorted(self.cells.get(t, {}).items())}
        return row

    def rows(self) -> list[dict]:
        """Every second, in order, serialised (without removing anything)."""
        return [self._row(t) for t in sorted(set(self.cells) | set(self.meta))]

    # -- queries -----------------------------------------------------------------------
    def extent(self) -> tuple[float, float] | None:
        """The first and one-past-last second that saw requests, or None when empty."""
        seconds = [t for t, cells in self.cells.items() if cells]
        if not seconds:
            return None
        return float(min(seconds)), float(max(seconds) + 1)

    def seconds(self, start: float, end: float) -> list[int]:
        """The seconds of [start, end): a second belongs to the window holding its middle."""
        return [t for t in range(math.floor(start), math.ceil(end)) if start <= t + 0.5 < end]

    def window(self, start: float, end: float) -> Window:
        """Merge the seconds in [start, end) into one window."""
        cells: dict[str, Cell] = {}
        offered = 0.0
        seconds = 0
        for t in self.seconds(start, end):
            seconds += 1
            offered += float(self.meta.get(t, {}).get("offered_rps", 0.0) or 0.0)
            for name, cell in self.cells.get(t, {}).items():
                cells.setdefault(name, Cell()).merge(cell)
        return Window(start, end, cells, offered, seconds)

    # -- files -------------------------------------------------------------------------
    def write_jsonl(self, path: Path) -> None:
        """Write one JSON object per second (the format the guardrail engine reads)."""
        with open(path, "w", encoding="utf-8") as fh:
            for row in self.rows():
                fh.write(json.dumps(row, separators=(",", ":")) + "\n")

    @classmethod
    def read_jsonl(cls, path: Path) -> Timeline:
        """Load a timeline written by `write_jsonl`."""
        timeline = cls()
        with open(path, encoding="utf-8") as fh:
            timeline.merge_rows(json.loads(line) for line in fh if line.strip())
        return timeline

    def write_csv(self, path: Path) -> None:
        """Write the human-readable per-second table (one row per endpoint and an aggregate)."""
        extent = self.extent()
        start = extent[0] if extent else 0.0
        header = [
            "time", "offset_s", "endpoint", "requests", "failures", "sheds", "retries",
            "retries_refused", "rps",
            "p50_ms", "p95_ms", "p99_ms", "max_ms", "users", "offered_rps", "cpu_percent",
        ]  # fmt: skip
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for t in sorted(set(self.cells) | set(self.meta)):
                meta = self.meta.get(t, {})
                cells = dict(sorted(self.cells.get(t, {}).items()))
                total = Cell()
                for cell in cells.values():
                    total.merge(cell)
                for name, cell in [*cells.items(), (AGGREGATED, total)]:
                    h = cell.hist
                    writer.writerow(
                        [
                            t, int(t - start), name, h.n, cell.fail, cell.shed, cell.retry,
                            cell.refused, h.n,
                            _fmt(h.percentile(50)), _fmt(h.percentile(95)),
                            _fmt(h.percentile(99)), _fmt(h.high if h.n else None),
                            meta.get("users", ""), meta.get("offered_rps", ""),
                            meta.get("cpu", ""),
                        ]
                    )  # fmt: skip


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def paced_seconds(timeline: Timeline, start: float, end: float) -> list[int]:
    """The seconds of [start, end) when every user was pacing: none started or stopped in it.

    Users are counted at the end of each second. In the second a user starts it offers only
    the part after its start, and in the second users stop, the requests made before the stop
    are counted against none offered: a ramp's seconds, or those of workers that started late
    (forked ones do, by about a second), made a healthy run look short. A user that started
    earlier offers its full rate: its first request falls uniformly within one interval.
    """
    paced = []
    for t in timeline.seconds(start, end):
        meta = timeline.meta.get(t, {})
        users = meta.get("users")
        if users and meta.get("offered_rps") and timeline.meta.get(t - 1, {}).get("users") == users:
            paced.append(t)
    return paced


def paced_throughput(timeline: Timeline, start: float, end: float) -> float | None:
    """Requests achieved over requests offered in the paced seconds of [start, end)."""
    return _throughput(timeline, paced_seconds(timeline, start, end))


def _throughput(timeline: Timeline, seconds: list[int]) -> float | None:
    """Requests achieved over requests offered in ``seconds`` (each with an offered rate)."""
    achieved = offered = 0.0
    for t in seconds:
        achieved += sum(c.hist.n for c in timeline.cells.get(t, {}).values()) / timeline.scale
        offered += float(timeline.meta[t]["offered_rps"])
    return achieved / offered if offered else None


def saturation(
    timeline: Timeline,
    start: float,
    end: float,
    window_s: int = 5,
    tolerance: float = 0.10,
    cpu_limit: float = 90.0,
) -> dict:
    """Find stretches where achieved RPS fell short of offered RPS (coordinated omission).

    Seconds are judged in sliding windows so one slow second does not count; a window is
    short when achieved < (1 - tolerance) x offered. The generator's CPU tells why.
    """
    short: set[int] = set()
    seconds = list(range(int(start), int(end)))
    paced_list = paced_seconds(timeline, start, end)
    paced = set(paced_list)
    for i in range(0, max(len(seconds) - window_s + 1, 0)):
        span = seconds[i : i + window_s]
        if not paced.issuperset(span):  # users starting or stopping: not a pacing measure
            continue
        win = timeline.window(span[0], span[-1] + 1)
        if win.offered > 0 and win.total().hist.n < (1 - tolerance) * win.offered:
            short.update(span)
    cpu = [float(timeline.meta.get(t, {}).get("cpu", 0) or 0) for t in seconds]
    max_cpu = max(cpu, default=0.0)
    busy = any(c >= cpu_limit for c, t in zip(cpu, seconds, strict=True) if t in short)
    stretches = _stretches(sorted(short))
    total = timeline.window(start, end)
    achieved = total.total().hist.n / total.duration if total.seconds else 0.0
    offered = total.offered / total.duration if total.seconds else 0.0
    reason = None
    if short:
        reason = (
            f"generator CPU at or above {cpu_limit:.0f}%"
            if busy
            else "server slower than the pacing (closed-loop users waited: coordinated omission)"
        )
    return {
        "saturated": bool(short),
        "saturated_s": len(short),
        "stretches": stretches,
        "offered_rps": round(offered, 3),
        "achieved_rps": round(achieved, 3),
        "throughput_ratio": round(achieved / offered, 4) if offered else None,
        # What the rule "generator kept pace" judges: the seconds no user started or stopped.
        "paced_throughput_ratio": _rounded(_throughput(timeline, paced_list)),
        "max_cpu_percent": max_cpu,
        "reason": reason,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _stretches(seconds: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for t in seconds:
        if out and t == out[-1][1]:
            out[-1][1] = t + 1
        else:
            out.append([t, t + 1])
    return out
