"""The audit's pure parts: history validation, reconciliation and the verdict."""

from __future__ import annotations

import time

import pytest

from harness import audit as audit_module
from harness.audit import AuditResult, _drain, _reconcile, _validated


def _result(**changes) -> AuditResult:
    fields = dict(
        drained=True,
        drain_seconds=0.1,
        outbox_pending=0,
        queue_ready=0,
        queue_consumers=1,
        dlq_depth=0,
        expected_dlq=0,
        applied=3,
        popularity_effects=3,
        interaction_effects=3,
        lost=[],
        unexpected=[],
        failed_but_applied=[],
        recovered=[],
        info_absent=0,
        history_given=True,
    )
    fields.update(changes)
    return AuditResult(**fields)


def test_history_outcomes_are_validated():
    with pytest.raises(ValueError, match="history\\[1\\]"):
        _validated([{"event_ids": ["a"], "outcome": "ok"}, {"event_ids": [], "outcome": "maybe"}])


def test_a_retried_unknown_outcome_that_succeeded_counts_as_ok():
    ops = _validated(
        [
            {"event_ids": ["A", "b"], "outcome": "info"},
            {"event_ids": ["a"], "outcome": "ok"},
            {"event_ids": ["b", "c"], "outcome": "fail"},
        ]
    )
    assert ops == {"ok": {"a"}, "info": {"b"}, "fail": {"c"}}


def test_a_write_whose_retry_the_budget_refused_stays_indeterminate():
    """The EventWriter's lines when its retry budget refuses: no line for the retry not sent.

    After an unknown outcome (info) the retry is refused at once, or it went out, met a 409
    (the first attempt still in flight) or a shed, and the retry after that was refused. The
    write has an info line either way, so a later failure never makes it "failed": whether
    it landed is judged as an unknown outcome (recovered, or absent and allowed), never lost.
    """
    history = [
        {"event_ids": ["landed"], "outcome": "info"},  # refused right after the timeout
        {"event_ids": ["never"], "outcome": "info"},
        {"event_ids": ["inflight"], "outcome": "info"},
        {"event_ids": ["inflight"], "outcome": "fail"},  # 409, its retry refused
        {"event_ids": ["shed"], "outcome": "info"},
        {"event_ids": ["shed"], "outcome": "fail"},  # 503, its retry refused
    ]
    ops = _validated(history)
    assert ops["fail"] == set() and ops["info"] == {"landed", "never", "inflight", "shed"}
    applied = {"landed", "inflight", "shed"}
    lost, unexpected, failed, recovered, absent = _reconcile(ops, applied, applied, set())
    assert lost == unexpected == failed == []
    assert recovered == ["inflight", "landed", "shed"] and absent == 1


def test_reconcile_classifies_every_id():
    ops = {"ok": {"a", "lost"}, "info": {"maybe", "gone"}, "fail": {"no", "oops"}}
    applied = {"a", "maybe", "oops", "phantom", "ghost"}
    events = {"a", "lost", "ghost"}
    lost, unexpected, failed, recovered, absent = _reconcile(ops, applied, events, set())
    assert lost == ["lost"]
    assert unexpected == ["ghost", "phantom"]
    assert failed == ["oops"] and recovered == ["maybe"] and absent == 1


def test_an_unknown_outcome_that_committed_is_owed_its_effect():
    # A 504 whose transaction committed: its rows are in events and outbox, never applied.
    ops = {"ok": set(), "info": {"committed", "outbox-only", "never", "landed"}, "fail": set()}
    events = {"committed", "landed"}
    lost, unexpected, failed, recovered, absent = _reconcile(
        ops, {"landed"}, events, {"outbox-only"}
    )
    assert lost == ["committed", "outbox-only"]
    assert recovered == ["landed"] and absent == 1 and unexpected == failed == []


def test_a_committed_write_is_owed_its_effect_whatever_its_client_heard():
    # A 503 (fail) whose rows committed anyway, never applied; a 202 whose event row is gone.
    ops = {"ok": {"a", "rowless"}, "info": set(), "fail": {"failed"}}
    lost, _, failed, *_ = _reconcile(ops, {"a", "rowless"}, {"a", "failed"}, {"rowless"})
    assert lost == ["failed", "rowless"] and failed == ["failed"]


def test_earlier_runs_events_are_not_charged_as_lost():
    ops = {"ok": {"a"}, "info": {"old", "new"}, "fail": set()}
    lost, *_ = _reconcile(ops, {"a"}, {"a", "old", "new"}, set(), baseline={"old"})
    assert lost == ["new"]


def test_earlier_runs_events_are_not_counted_as_recovered_writes():
    ops = {"ok": {"a"}, "info": {"old", "lost-answer"}, "fail": set()}
    applied = {"a", "old", "lost-answer"}
    *_, recovered, absent = _reconcile(
        ops, applied, {"a", "old", "lost-answer"}, set(), baseline={"old"}
    )
    assert recovered == ["lost-answer"] and absent == 0


def test_a_missing_queue_is_reported_as_not_drained():
    result = _result(drained=False, queue_ready=None)
    assert "queue missing" in result.violations()[0] and not result.ok


def test_without_history_every_accepted_event_must_be_applied():
    lost, unexpected, *_ = _reconcile(None, {"a"}, {"a", "b"}, {"c"})
    assert lost == ["b", "c"] and unexpected == []


@pytest.mark.parametrize(
    ("changes", "violation"),
    [
        ({"drained": False}, "not drained"),
        ({"lost": ["x"]}, "lost 1"),
        ({"unexpected": ["x"]}, "unexpected 1"),
        ({"failed_but_applied": ["x"]}, "failed writes"),
        ({"popularity_effects": 5}, "duplicated effects: 2"),
        ({"interaction_effects": 2}, "missing effects: 1"),
        ({"dlq_depth": 1}, "DLQ depth 1"),
    ],
)
def test_each_broken_invariant_fails_the_verdict_with_a_reason(changes, violation):
    result = _result(**changes)
    assert not result.ok
    assert any(violation in v for v in result.violations())


def test_broker_duplicates_and_recovered_writes_are_fine():
    result = _result(recovered=["r"], expected_dlq=2, dlq_depth=2)
    assert result.ok and result.violations() == []
    report = result.to_dict()
    assert report["ok"] is True and report["recovered_count"] == 1
    assert report["queue_unacked"] is None


class _Cursor:
    """Answers the drain's two queries: nothing pending, a steady inbox."""

    def __init__(self):
        self.row = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        self.row = (0,) if "published_at IS NULL" in sql else (5,)

    def fetchone(self):
        return self.row


class _Conn:
    def cursor(self):
        return _Cursor()


class _NoQueue:
    def state(self, queue):
        return None, None


def test_the_drain_does_not_take_a_missing_queue_for_an_empty_one():
    drained, pending, ready, _ = _drain(_Conn(), _NoQueue(), "q", "c", 0.3, 0.05)
    assert not drained and pending == 0 and ready is None


class _Empty:
    def state(self, queue):
        return 0, 1


def test_owed_writes_are_waited_for_while_the_consumer_holds_deliveries_or_cannot_say():
    for reading in (3, None):
        started = time.monotonic()
        drained, *_ = _drain(
            _Conn(),
            _Empty(),
            "q",
            "c",
            5,
            0.05,
            ["e1"],
            held_wait_s=0.6,
            unacked=lambda r=reading: r,
        )
        assert drained and time.monotonic() - started >= 0.6


def test_a_consumer_that_holds_nothing_for_clear_s_ends_the_wait(monkeypatch):
    monkeypatch.setattr(audit_module, "CLEAR_S", 0.3)
    started = time.monotonic()
    drained, *_ = _drain(
        _Conn(), _Empty(), "q", "c", 5, 0.05, ["e1"], held_wait_s=30, unacked=lambda: 0
    )
    assert drained and time.monotonic() - started < 5
