"""The audit's pure parts: history validation, reconciliation and the verdict."""

from __future__ import annotations

import pytest

from harness.audit import AuditResult, _reconcile, _validated


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


def test_reconcile_classifies_every_id():
    ops = {"ok": {"a", "lost"}, "info": {"maybe", "gone"}, "fail": {"no", "oops"}}
    applied = {"a", "maybe", "oops", "phantom"}
    lost, unexpected, failed, recovered, absent = _reconcile(ops, applied, {"ghost"}, set())
    assert lost == ["lost"]
    assert unexpected == ["ghost", "phantom"]
    assert failed == ["oops"] and recovered == ["maybe"] and absent == 1


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
