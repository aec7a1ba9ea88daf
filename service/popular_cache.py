"""A per-worker cache of the popular pool: it changes slowly and every request needs it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from service.ranking import Candidate, RankingPool


class PopularPool:
    """Hold the popular candidates for ``ttl_s`` seconds (0 = always reload)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded_at = -float("inf")
        self._pool = RankingPool([])

    def fresh(self) -> bool:
        return self.ttl_s > 0 and self._clock() - self._loaded_at < self.ttl_s

    def get(self) -> RankingPool:
        """The cached pool, indexed for ranking."""
        with self._lock:
            return self._pool

    def store(self, candidates: list[Candidate]) -> None:
        pool = RankingPool(candidates)
        with self._lock:
            self._pool, self._loaded_at = pool, self._clock()
