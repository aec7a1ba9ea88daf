"""Per-process database access: a pool created after fork, a breaker, deadlines, 503 mapping."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.errors

from service.breaker import CircuitBreaker, CircuitOpen
from service.db.connect import connect
from service.db.deadline import DeadlineExceeded, deadline_scope, remaining
from service.db.pool import Pool, PoolTimeout
from service.db.uow import UnitOfWork
from service.problems import ApiProblem
from service.settings import Settings

log = logging.getLogger("reco.db")

# Errors that say "the database is unreachable or too slow", as opposed to a bug in our SQL.
UNAVAILABLE = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.QueryCanceled,
    psycopg2.errors.LockNotAvailable,
    psycopg2.errors.AdminShutdown,
    psycopg2.errors.CannotConnectNow,
)


def _refused(exc: psycopg2.Error) -> bool:
    """Did the server answer with an ERROR, so that the transaction certainly rolled back?

    An ERROR ends the transaction without committing (a lock or statement timeout at
    COMMIT). A FATAL may come after the commit record was written (a backend terminated
    while waiting for a synchronous standby), and a lost connection says nothing.
    """
    return exc.pgcode is not None and exc.diag.severity_nonlocalized == "ERROR"


class Database:
    """Open units of work with a deadline; fail fast with 503 while the database is down."""

    def __init__(self, settings: Settings, metrics=None):
        self.settings = settings
        self.metrics = metrics
        self.breaker = CircuitBreaker(
            settings.breaker_failure_threshold, settings.breaker_reset_s, on_change=self._on_breaker
        )
        self._pool: Pool | None = None
        self._pid = 0

    def _on_breaker(self, state: str) -> None:
        log.warning("database circuit %s", state, extra={"breaker": state})
        if self.metrics:
            self.metrics.breaker_open.set(1 if state == "open" else 0)
            if state == "open":  # called under the breaker's lock: only start a timer here
                self._check_gauge_in(self.breaker.reset_s)

    def _check_gauge_in(self, seconds: float) -> None:
        timer = threading.Timer(seconds + 0.01, self._clear_gauge_when_half_open)
        timer.daemon = True
        timer.start()

    def _clear_gauge_when_half_open(self) -> None:
        """Set the open gauge back to 0 once the breaker would let a trial through.

        The breaker turns half open by the clock alone; without a timer the gauge (and the
        alert on it) would stay at 1 until a request happened to reach this worker.
        """
        metrics = self.metrics
        if metrics is None:
            return
        # Under the breaker's lock: a trial failing meanwhile cannot set 1 just before this 0.
        until = self.breaker.unless_open(lambda: metrics.breaker_open.set(0))
        if until is not None:  # opened again meanwhile (a failure while open moves its end)
            self._check_gauge_in(max(until - time.monotonic(), 0.0))

    def _connect(self):
        """Open one connection for the pool, timing it (reconnect churn shows here)."""
        started = time.perf_counter()
        conn = connect(self.settings, "api")
        if self.metrics:
            self.metrics.db_connect.observe(time.perf_counter() - started)
        return conn

    def _waited(self, seconds: float) -> None:
        if self.metrics:
            self.metrics.pool_wait.observe(seconds)

    @property
    def pool(self) -> Pool:
        # Pools must not cross fork(): create one lazily in each worker process.
        if self._pool is None or self._pid != os.getpid():
            self._pool = Pool(self._connect, self.settings.db_pool_size)
            self._pid = os.getpid()
        return self._pool

    def _unavailable(self, detail: str, retry_after: int | None = None) -> ApiProblem:
        seconds = retry_after or self.settings.retry_after_s
        return ApiProblem(
            503, "database-unavailable", detail, headers={"Retry-After": str(seconds)}
        )

    def _outcome_unknown(self) -> ApiProblem:
        # COMMIT was sent and no answer came: it may have been applied. A 503 would promise
        # that nothing was committed; a retry with the same Idempotency-Key is always safe.
        return ApiProblem(
            504,
            "outcome-unknown",
            "the database did not confirm the commit in time; the request may or may not have"
            " taken effect: retry it with the same Idempotency-Key",
            headers={"Retry-After": str(self.settings.retry_after_s)},
        )

    @contextmanager
    def unit_of_work(
        self, budget_s: float, autocommit: bool = False, probe: bool = False
    ) -> Iterator[UnitOfWork]:
        """Yield a UnitOfWork bounded by ``budget_s``; map outages to 503 problems.

        A ``probe`` (readiness) is refused while the breaker is open and may be its trial,
        but its failures never open it: its budget is shorter than a request's, so a probe
        can fail where requests still succeed, and it must not shed them.
        """
        try:
            trial = self.breaker.before_call()
        except CircuitOpen:
            if self.metrics:
                self.metrics.shed.labels("circuit_open").inc()
            raise self._unavailable("database unavailable", self.breaker.retry_after_s()) from None
        with deadline_scope(budget_s):
            checkout = min(self.settings.db_checkout_timeout_ms / 1000, max(remaining(), 0))
            work = UnitOfWork(
                self.pool, checkout, autocommit, self.settings.lock_timeout_ms, self._waited
            )
            try:
                with work as uow:
                    yield uow
            except PoolTimeout:
                self.breaker.neutral(trial)
                if self.metrics:
                    self.metrics.shed.labels("pool_exhausted").inc()
                raise self._unavailable("no database connection free") from None
            except DeadlineExceeded:
                self._failed("deadline", trial, probe)
                if work.committing:
                    raise self._outcome_unknown() from None
                raise self._unavailable("database did not answer within the deadline") from None
            except UNAVAILABLE as exc:
                self._failed(type(exc).__name__, trial, probe)
                if work.committing and not _refused(exc):
                    raise self._outcome_unknown() from None
                raise self._unavailable("database unavailable") from None
            except BaseException:
                # The database answered; the failure is the request's own (e.g. a 422).
                self.breaker.success()
                raise
        self.breaker.success()

    def _failed(self, kind: str, trial: bool = False, probe: bool = False) -> None:
        if probe:
            self.breaker.neutral(trial)
        else:
            self.breaker.failure()
        if self.metrics:
            self.metrics.db_errors.labels(kind).inc()
        log.warning("database call failed", extra={"kind": kind})
