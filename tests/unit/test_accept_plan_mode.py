"""POST /v1/events: small batches ask for generic plans, large ones keep the planner's choice."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from service.db import events as events_repo


class RecordingCursor:
    """Records what accept() sends; answers as accept_events would for a first request."""

    def __init__(self):
        self.connection = SimpleNamespace(prepared={events_repo.ACCEPT_STATEMENT})
        self.sent: list[str] = []

    def execute(self, sql: str, params=None) -> None:
        self.sent.append(sql)

    def fetchone(self):
        return ("accepted", None, 202, b"{}", None, 1)


def _events(n: int) -> list[dict]:
    return [
        {
            "event_id": f"00000000-0000-4000-8000-{i:012d}",
            "user_id": "u-1",
            "item_id": i,
            "kind": "view",
            "occurred_at": "2026-11-29T10:00:00+00:00",
        }
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("size", "generic"),
    [(1, True), (events_repo.GENERIC_PLAN_MAX_EVENTS, True), (11, False), (100, False)],
)
def test_plan_mode_follows_the_batch_size(size, generic):
    cur = RecordingCursor()
    events = _events(size)
    outbox = {
        "event_type": "interaction.recorded",
        "headers": {},
        "routing_keys": ["interaction.recorded.view"] * size,
        "payloads": [b"{}"] * size,
    }
    events_repo.accept(cur, {"client_id": "dev"}, events, outbox)
    (sql,) = cur.sent
    # SET LOCAL: the mode ends with this transaction, never leaks into the pooled session.
    assert sql.startswith("BEGIN;")
    assert ("SET LOCAL plan_cache_mode = force_generic_plan" in sql) is generic
    assert "EXECUTE reco_accept_events" in sql
