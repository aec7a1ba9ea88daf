"""Outbox SQL for the relay: claim, mark, record failures, purge, measure. Callers own the tx."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

# Matches the partial index outbox_unpublished_idx (id) WHERE published_at IS NULL exactly, so
# the claim walks only unpublished rows in id order. No "id > last seen" watermark: ids
# commit out of order, and SKIP LOCKED lets several relays claim disjoint rows.
CLAIM = """
SELECT id, event_id::text, event_type, routing_key, payload, headers, created_at
FROM outbox
WHERE published_at IS NULL
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

MARK_PUBLISHED = """
UPDATE outbox SET published_at = clock_timestamp(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY(%(ids)s)
"""

RECORD_FAILURES = """
UPDATE outbox AS o SET attempts = o.attempts + 1, last_error = f.error
FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS f(id, error)
WHERE o.id = f.id
"""

# Batched and SKIP LOCKED so a purge never waits on, or holds up, a claiming relay.
PURGE_PUBLISHED = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => %(age_s)s)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
"""

BACKLOG = """
SELECT count(*), COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)), 0)
FROM outbox WHERE published_at IS NULL
"""


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxRow:
    """One claimed outbox row."""

    id: int
    event_id: str
    event_type: str
    routing_key: str
    payload: bytes
    headers: dict[str, Any]
    created_at: dt.datetime


def claim(cur, limit: int) -> list[OutboxRow]:
    """Lock up to ``limit`` unpublished rows (skipping rows other relays hold), oldest id first."""
    cur.execute(CLAIM, {"limit": limit})
    return [
        OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5] or {}, r[6]) for r in cur.fetchall()
    ]


def mark_published(cur, ids: list[int]) -> int:
    """Mark confirmed rows published in one statement; return the row count."""
    if not ids:
        return 0
    cur.execute(MARK_PUBLISHED, {"ids": ids})
    return cur.rowcount


def record_failures(cur, failures: dict[int, str]) -> int:
    """Count an attempt and keep the last error for rows that stay pending."""
    if not failures:
        return 0
    ids = list(failures)
    cur.execute(RECORD_FAILURES, {"ids": ids, "errors": [failures[i][:500] for i in ids]})
    return cur.rowcount


def purge_published(cur, older_than_s: float, limit: int) -> int:
    """Delete up to ``limit`` rows published more than ``older_than_s`` seconds ago."""
    cur.execute(PURGE_PUBLISHED, {"age_s": older_than_s, "limit": limit})
    return cur.rowcount


def backlog(cur) -> tuple[int, float]:
    """Return (unpublished rows, age in seconds of the oldest one)."""
    cur.execute(BACKLOG)
    count, age = cur.fetchone()
    return int(count), float(age)
