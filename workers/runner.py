"""The one loop every worker runs: run_once, idle waits, capped jittered backoff, graceful stop."""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("reco.worker")

# Failures are forgotten only after this long without one: a dependency that comes back for a
# moment and fails again (a flapping link) keeps the backoff growing instead of resetting it.
STABLE_S = 10.0


class Worker(Protocol):
    """What the runner drives. Tests call run_once() directly."""

    name: str

    def run_once(self) -> int:
        """Do one unit of work (a batch); return how many items it handled."""

    def wait(self, timeout: float) -> None:
        """Idle up to ``timeout`` s, keeping connections alive; may return early on a wake-up."""

    def reset(self, error: BaseException) -> None:
        """Drop connections that ``error`` may have broken; the next run_once reconnects."""

    def request_stop(self) -> None:
        """Stop taking new work soon (called from a signal handler: only set flags)."""

    def close(self) -> None:
        """Finish in-flight work, commit, acknowledge and close everything."""


class Backoff:
    """Exponential delay, capped, with "equal jitter": half fixed, half random."""

    def __init__(
        self, base_s: float = 0.1, cap_s: float = 30.0, rng: Callable[[], float] = random.random
    ):
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (failures >= 1)."""
        exponent = min(max(failures, 1) - 1, 32)  # bounded so 2**n never overflows a float
        ceiling = min(self.cap_s, self.base_s * (2**exponent))
        # Jitter spreads reconnects of many workers; the fixed half keeps a real pause.
        return ceiling / 2 + self.rng() * ceiling / 2


class Runner:
    """Own the loop around a worker: handle signals, failures and idle time; stop gracefully."""

    def __init__(
        self,
        worker: Worker,
        idle_s: float,
        backoff: Backoff,
        beat: Callable[..., None] = lambda **_: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_iterations: int | None = None,
        max_seconds: float | None = None,
        pause_slice_s: float = 0.5,
        stable_s: float = STABLE_S,
    ):
        self.worker = worker
        self.idle_s = idle_s
        self.backoff = backoff
        self.beat = beat
        self.clock = clock
        self.sleep = sleep
        self.max_iterations = max_iterations
        self.max_seconds = max_seconds
        self.pause_slice_s = pause_slice_s
        self.stable_s = stable_s
        self.stopping = False
        self.signal_name: str | None = None  # the first SIGTERM/SIGINT received
        self.failures = 0  # since the loop last ran stable_s without a failure
        self.last_failure = 0.0
        self.recovered = True  # no failure since the last successful iteration
        self.iterations = 0
        self.handled = 0

    def install_signal_handlers(self) -> None:
        """Turn SIGTERM and SIGINT into a graceful stop."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only flags: a log write from a signal handler can interrupt another write to the
        # same stream and raise "reentrant call" there. _close() logs the signal.
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
        self.request_stop()

    def request_stop(self) -> None:
        """Finish the current iteration, then close the worker and return from run()."""
        self.stopping = True
        self.worker.request_stop()

    def run(self) -> int:
        """Loop until stopped (or a test bound is hit); always close the worker; return 0."""
        started = self.clock()
        try:
            while not self.stopping and not self._bound_reached(started):
                self.iterations += 1
                self.run_iteration()
        finally:
            self._close()
        return 0

    def run_iteration(self) -> None:
        """Run the worker once; on failure back off, on no work idle."""
        try:
            handled = self.worker.run_once()
        except Exception as exc:  # noqa: BLE001 - any failure means: reset, back off, retry
            self.failures += 1
            self.last_failure, self.recovered = self.clock(), False
            delay = self.backoff.delay(self.failures)
            log.warning(
                "worker iteration failed; backing off",
                extra={
                    "worker": self.worker.name,
                    "failures": self.failures,
                    "delay_s": round(delay, 3),
                    "error": type(exc).__name__,
                    "error_detail": str(exc)[:300],
                },
            )
            self._safely(self.worker.reset, exc)
            self.pause(delay)
            return
        if not self.recovered:
            log.info("worker recovered", extra={"worker": self.worker.name})
            self.recovered = True
        if self.failures and self.clock() - self.last_failure >= self.stable_s:
            self.failures = 0
        self.handled += handled
        self.beat(failures=0)
        if handled == 0 and not self.stopping:
            self._safely(self.worker.wait, self.idle_s)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` in slices through worker.wait (heartbeats flow); stop cuts it short."""
        deadline = self.clock() + seconds
        # Bounded even if the clock stalls; the deadline normally ends it.
        for _ in range(4 * int(seconds / self.pause_slice_s) + 10):
            remaining = deadline - self.clock()
            if remaining <= 0 or self.stopping:
                return
            self.beat(failures=self.failures)
            slice_s = min(remaining, self.pause_slice_s)
            slice_end = self.clock() + slice_s
            self._safely(self.worker.wait, slice_s)
            # A worker's wait may return at once: a wake-up, or a relay that lost its
            # connections and means to look again. The backoff still takes its time.
            rest = slice_end - self.clock()
            if rest > 0 and not self.stopping:
                self.sleep(rest)

    def _bound_reached(self, started: float) -> bool:
        if self.max_iterations is not None and self.iterations >= self.max_iterations:
            return True
        return self.max_seconds is not None and self.clock() - started >= self.max_seconds

    def _close(self) -> None:
        if self.signal_name is not None:
            log.info("stop requested", extra={"signal": self.signal_name})
        try:
            self.worker.close()
        except Exception:  # noqa: BLE001 - closing must not mask the reason we stopped
            log.exception("worker close failed", extra={"worker": self.worker.name})

    def _safely(self, call: Callable[..., object], *args: object) -> None:
        try:
            call(*args)
        except Exception:  # noqa: BLE001 - waits and resets must never kill the loop
            log.exception("worker housekeeping failed", extra={"worker": self.worker.name})
