"""A client retry budget shared by the users of one Locust process (Finagle's RetryBudget model).

Every first attempt deposits, every retry withdraws; deposits and withdrawals expire after
``ttl_s``, and a reserve of ``floor_per_s`` x ``ttl_s`` retries is always there, so a client
that has just started or sends little may still retry. Over any ``ttl_s`` window the retries
sent stay within ``ratio`` x the first attempts plus the reserve: under overload the budget
refuses the rest instead of multiplying the offered load (spec 2.2: no retry storm).

Finagle's model rather than gRPC's retryThrottling: gRPC's bucket fills on successes and
drains on failures, so against a service that sheds everything it stops retries altogether
and a load test's retry share would depend on the failure rate; a share of the requests is
what ``--retry-budget`` states and what the timeline can check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

TTL_S = 10.0  # Finagle's default: deposits count for about ten seconds
SLICES = 10  # the window moves in steps of ttl / slices (Finagle's WindowedAdder)
SCALE = 1000  # integer tokens, as in Finagle: a ratio of 0.2 makes a retry cost 5 deposits
MAX_RATIO = 1000.0  # Finagle's bound: one token per retry at the most
DEFAULT_RATIO = 0.2
DEFAULT_FLOOR_PER_S = 1.0


class Window:
    """A sum over the last ``ttl_s`` seconds, kept in ``slices`` slots of an injected clock."""

    def __init__(self, ttl_s: float, slices: int, clock: Callable[[], float]):
        self.width = ttl_s / slices
        self.slots = [0] * slices
        self.clock = clock
        self.current = self._slot_index()

    def _slot_index(self) -> int:
        return math.floor(self.clock() / self.width)

    def _expire(self) -> None:
        """Zero the slots the clock has moved past (at most all of them: a bounded loop)."""
        now = self._slot_index()
        for step in range(1, min(now - self.current, len(self.slots)) + 1):
            self.slots[(self.current + step) % len(self.slots)] = 0
        self.current = max(self.current, now)

    def add(self, amount: int) -> None:
        """Add ``amount`` (negative for a withdrawal) to the current slot."""
        self._expire()
        self.slots[self.current % len(self.slots)] += amount

    def total(self) -> int:
        """The sum of the slots still in the window."""
        self._expire()
        return sum(self.slots)


class RetryBudget:
    """Retries allowed: ``ratio`` per first attempt over ``ttl_s``, plus ``floor_per_s``.

    Users run as greenlets of one thread and nothing here yields, so no lock is needed.
    """

    def __init__(
        self,
        ratio: float = DEFAULT_RATIO,
        floor_per_s: float = DEFAULT_FLOOR_PER_S,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not 0 <= ratio <= MAX_RATIO:
            raise ValueError(f"ratio must be between 0 and {MAX_RATIO:g} (got {ratio})")
        if not 0 <= floor_per_s < math.inf:
            raise ValueError(f"floor must be a finite number of retries/s (got {floor_per_s})")
        if not 0 < ttl_s < math.inf:
            raise ValueError(f"ttl must be a positive number of seconds (got {ttl_s})")
        self.ratio, self.floor_per_s, self.ttl_s = ratio, floor_per_s, ttl_s
        # Only a floor: deposits earn nothing and each retry costs one token of the reserve.
        self.deposit_amount = SCALE if ratio else 0
        self.withdrawal_amount = max(1, round(SCALE / ratio)) if ratio else 1
        self.reserve = math.floor(floor_per_s * ttl_s * self.withdrawal_amount)
        self.window = Window(ttl_s, SLICES, clock)
        self.granted = 0
        self.refused = 0

    def deposit(self) -> None:
        """Credit one first attempt."""
        if self.deposit_amount:
            self.window.add(self.deposit_amount)

    def try_withdraw(self) -> bool:
        """Take one retry if the balance allows it; a refusal leaves the balance untouched."""
        if self.window.total() + self.reserve < self.withdrawal_amount:
            self.refused += 1
            return False
        self.window.add(-self.withdrawal_amount)
        self.granted += 1
        return True

    def balance(self) -> int:
        """Retries that could be taken now."""
        return max(0, (self.window.total() + self.reserve) // self.withdrawal_amount)

    def settings(self) -> dict[str, float]:
        """What the run records about its budget (summary.json)."""
        return {"ratio": self.ratio, "floor_per_s": self.floor_per_s, "ttl_s": self.ttl_s}
