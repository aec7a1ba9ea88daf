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

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go to the dependency now."""
        with self._lock:
            state = self._current_state()
            if state == CLOSED:
                return
            if state == HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return
            raise CircuitOpen("database circuit open")

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial_running = False
            self._set(CLOSED)

    def neutral(self) -> None:
        """End a trial call that said nothing about the dependency's health."""
        with self._lock:
            self._trial_running = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._state == OPEN or self._failures >= self.threshold:
                self._opened_at = self._clock()
                self._set(OPEN)

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_change:
                self._on_change(state)

    def retry_after_s(self) -> int:
        """Whole seconds until a trial call will be allowed (at least 1)."""
        with self._lock:
            left = self.reset_s - (self._clock() - self._opened_at)
        return max(1, int(left + 0.999))
