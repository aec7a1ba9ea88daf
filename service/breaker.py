"""A circuit breaker: after repeated database failures, fail fast instead of waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitOpen(RuntimeError):
    """The breaker is open: the dependency is considered down."""


class CircuitBreaker:
    """Open after ``threshold`` consecutive failures; let one trial through after ``reset_s``."""

    def __init__(
        self,
        threshold: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ):
        self.threshold = threshold
        self.reset_s = reset_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._failures = 0
        self._state = CLOSED
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._current_state()

    def _current_state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_s:
            return HALF_OPEN
        return self._state

    def before_call(self) -> bool:
        """Raise CircuitOpen unless a call may go to the dependency now; True for the trial."""
        with self._lock:
            state = self._current_state()
            if state == CLOSED:
                return False
            if state == HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            raise CircuitOpen("database circuit open")

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial_running = False
            self._set(CLOSED)

    def neutral(self, trial: bool) -> None:
        """End a call that said nothing about the dependency's health.

        Only the trial's own end lets another trial through: a call admitted before the
        breaker opened must not start a second one while the first still runs.
        """
        if trial:
            with self._lock:
                self._trial_running = False

    def unless_open(self, action: Callable[[], None]) -> float | None:
        """Run ``action`` unless the breaker is open, atomically with its state changes.

        Return None when it ran, else the clock reading at which the breaker half opens.
        """
        with self._lock:
            if self._current_state() == OPEN:
                return self._opened_at + self.reset_s
            action()
            return None

    def open_until(self) -> float | None:
        """The clock reading at which an open breaker lets a trial through; None if not open."""
        with self._lock:
            if self._current_state() != OPEN:
                return None
            return self._opened_at + self.reset_s

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._state == OPEN or self._failures >= self.threshold:
                # A failed trial opens it again: tell, as for the first opening.
                reopened = self._current_state() == HALF_OPEN
                self._opened_at = self._clock()
                self._set(OPEN, force=reopened)

    def _set(self, state: str, force: bool = False) -> None:
        if state != self._state or force:
            self._state = state
            if self._on_change:
                self._on_change(state)

    def retry_after_s(self) -> int:
        """Whole seconds until a trial call will be allowed (at least 1)."""
        with self._lock:
            left = self.reset_s - (self._clock() - self._opened_at)
        return max(1, int(left + 0.999))
