"""Bound in-flight requests per worker; beyond the bound answer 503 before any work."""

from __future__ import annotations

import threading
from collections.abc import Mapping


class InflightLimiter:
    """Count requests in flight; ``try_enter`` fails once ``limit`` are running."""

    def __init__(self, limit: int):
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    def try_enter(self) -> bool:
        with self._lock:
            if self._count >= self.limit:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._count = max(0, self._count - 1)


class TokenBucket:
    """Per-client rate limit: ``rate`` requests per second with a burst of ``burst``."""

    def __init__(self, rate: float, burst: float, clock, max_clients: int = 10_000):
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def off(self) -> bool:
        """A rate of 0 switches the limit off: every request is allowed."""
        return self.rate <= 0

    def allow(self, client: str) -> bool:
        return self.take({client: 1})

    def take(self, costs: Mapping[str, int]) -> bool:
        """Spend ``costs[key]`` tokens from each key's bucket: all of them, or none."""
        if self.off:
            return True
        now = self._clock()
        with self._lock:
            unknown = sum(1 for key in costs if key not in self._buckets)
            if unknown and len(self._buckets) + unknown > self.max_clients:
                self._forget(now)
            refilled = {key: self._tokens(key, now) for key in costs}
            allowed = all(refilled[key] >= cost for key, cost in costs.items())
            for key, tokens in refilled.items():
                self._buckets[key] = (tokens - costs[key] if allowed else tokens, now)
            return allowed

    def wait_s(self, costs: Mapping[str, int]) -> float:
        """Seconds until ``take(costs)`` could succeed: what a refused client should wait."""
        if self.off:
            return 0.0
        now = self._clock()
        with self._lock:
            missing = max(cost - self._tokens(key, now) for key, cost in costs.items())
        return max(0.0, missing) / self.rate

    def _tokens(self, key: str, now: float) -> float:
        """The tokens in ``key``'s bucket at ``now`` (a new client's bucket is full)."""
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - stamp) * self.rate)

    def _forget(self, now: float) -> None:
        """Drop clients whose bucket has refilled: clients keyed by address are unbounded."""
        self._buckets = {
            client: (tokens, stamp)
            for client, (tokens, stamp) in self._buckets.items()
            if tokens + (now - stamp) * self.rate < self.burst
        }
        if len(self._buckets) > self.max_clients // 2:
            # Still crowded (a flood from many addresses): start afresh rather than grow, and
            # leave room for half as many new clients before the next O(n) pass.
            self._buckets.clear()
