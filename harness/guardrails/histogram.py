"""A mergeable latency histogram with Locust's rounding (exact below 100 ms, 2 digits above)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


def bucket(ms: float) -> int:
    """Round a response time like Locust does, so percentiles match its reports."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


class Histogram:
    """Counts of rounded response times plus exact count, sum, min and max."""

    __slots__ = ("counts", "n", "total", "low", "high")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf

    def add(self, ms: float, times: int = 1) -> None:
        """Record one response time (milliseconds)."""
        key = bucket(ms)
        self.counts[key] = self.counts.get(key, 0) + times
        self.n += times
        self.total += ms * times
        self.low = min(self.low, ms)
        self.high = max(self.high, ms)

    def merge(self, other: Histogram) -> Histogram:
        """Add another histogram's samples into this one and return self."""
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        self.n += other.n
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        return self

    def percentile(self, p: float) -> float | None:
        """The nearest-rank p-th percentile (0 < p <= 100), or None when empty."""
        if self.n == 0:
            return None
        rank = max(1, math.ceil(self.n * p / 100.0))
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                # Rounding may push a bucket past the exact extremes; clamp to them.
                return float(min(max(key, self.low), self.high))
        return float(self.high)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def to_dict(self) -> dict:
        """Serialise compactly (JSON object keys must be strings)."""
        return {
            "n": self.n,
            "sum": round(self.total, 3),
            "min": None if self.n == 0 else round(self.low, 3),
            "max": None if self.n == 0 else round(self.high, 3),
            "hist": {str(k): v for k, v in self.counts.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Histogram:
        """Rebuild a histogram written by `to_dict`."""
        hist = cls()
        hist.counts = {int(float(k)): int(v) for k, v in data.get("hist", {}).items()}
        hist.n = int(data.get("n", sum(hist.counts.values())))
        hist.total = float(data.get("sum", 0.0))
        if hist.n:
            hist.low = float(data["min"]) if data.get("min") is not None else min(hist.counts)
            hist.high = float(data["max"]) if data.get("max") is not None else max(hist.counts)
        return hist

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        """One histogram holding every sample of ``parts``."""
        out = cls()
        for part in parts:
            out.merge(part)
        return out
