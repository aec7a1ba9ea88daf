"""A per-worker cache of the popular pool: it changes slowly and every request needs it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from service.ranking import Candidate, Ranked, rank_popular


class PopularPool:
    """Hold the popular candidates for ``ttl_s`` seconds (0 = always reload)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded_at = -float("inf")
        self._pool: list[Candidate] = []
        self._popular: list[Ranked] = []

    def fresh(self) -> bool:
        return self.ttl_s > 0 and self._clock() - self._loaded_at < self.ttl_s

    def get(self) -> tuple[list[Candidate], list[Ranked]]:
        """The cached pool and its history-free ranking."""
        with self._lock:
            return self._pool, self._popular

    def store(self, pool: list[Candidate]) -> None:
        ranked = rank_popular(pool)
        with self._lock:
            self._pool, self._popular, self._loaded_at = pool, ranked, self._clock()
