"""COMMIT's lock wait and which failures at COMMIT are definite."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from service.db.access import _refused
from service.db.uow import UnitOfWork


def _uow(lock_timeout_ms: int = 200) -> UnitOfWork:
    return UnitOfWork(
        pool=None, checkout_timeout_s=0.2, autocommit=True, lock_timeout_ms=lock_timeout_ms
    )


@pytest.mark.parametrize(
    ("left_s", "round_trip_s", "sql"),
    [
        (1.4, 0.002, "SET LOCAL lock_timeout = 1300; COMMIT"),
        (1.4, 0.2, "SET LOCAL lock_timeout = 1000; COMMIT"),  # margin: twice the round trip
        (0.3, 0.002, "COMMIT"),  # no more than the configured lock timeout: leave it
        (0.05, 0.002, "COMMIT"),
    ],
)
def test_commit_waits_for_locks_until_just_before_the_deadline(left_s, round_trip_s, sql):
    assert _uow()._commit_sql(left_s, round_trip_s) == sql


def _error(pgcode: str | None, severity: str | None) -> SimpleNamespace:
    return SimpleNamespace(pgcode=pgcode, diag=SimpleNamespace(severity_nonlocalized=severity))


@pytest.mark.parametrize(
    ("error", "definite"),
    [
        (_error("55P03", "ERROR"), True),  # lock timeout: the transaction rolled back
        (_error("57014", "ERROR"), True),  # statement timeout or cancel
        (_error("57P01", "FATAL"), False),  # terminated: perhaps after the commit record
        (_error(None, None), False),  # connection lost: no answer at all
    ],
)
def test_only_an_error_answer_proves_the_commit_did_not_happen(error, definite):
    assert _refused(error) is definite
