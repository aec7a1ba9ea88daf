"""Outbox SQL for the relay: claim, mark, record failures, purge, measure.

The relay's connections are in autocommit mode and spell their transactions out, so one
round trip can mark a batch, commit it and claim the next one: on a busy 2-core host every
round trip also waits for the scheduler to run PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

# Rows a claim may take. Matches the partial index outbox_unpublished_idx (id) WHERE
# published_at IS NULL exactly, so a claim walks only unpublished rows in id order. Rows the
# broker refused wait for their retry_at (the filter runs on rows the index scan found):
# refused rows at the head never hold back the ones behind them.
CLAIMABLE_ROWS = "published_at IS NULL AND (retry_at IS NULL OR retry_at <= now())"

# No "id > last seen" watermark: ids commit out of order, and SKIP LOCKED lets several relays
# claim disjoint rows; ``after`` is only a hint that every eighth claim drops (see
# Relay._claim_from). It returns the message headers ready to send (outbox headers plus
# created_at and the row id, named as workers.messages.CREATED_AT and OUTBOX_ID) as JSON
# text: orjson parses that far faster than psycopg2's json and timestamp casters would.
CLAIM = f"""
SELECT id, event_id::text, event_type, routing_key, payload,
       (headers || jsonb_build_object('created_at', created_at, 'outbox_id', id))::text,
       EXTRACT(EPOCH FROM created_at)::bigint
FROM outbox
WHERE {CLAIMABLE_ROWS} AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""  # noqa: S608 - a constant predicate

# Whether a claim would find a row now. Rows other relays hold are skipped, as the claim
# skips them; on an autocommit connection the lock taken to test a row ends with the statement.
CLAIMABLE = f"""
SELECT EXISTS (
    SELECT 1 FROM outbox WHERE {CLAIMABLE_ROWS}
    ORDER BY id LIMIT 1
    FOR UPDATE SKIP LOCKED
)
"""  # noqa: S608 - a constant predicate

# The claim's transaction plans without bitmap scans. While few rows are unpublished, the
# planner prices a bitmap scan of the partial index plus a sort below the ordered index scan,
# but a bitmap scan never marks index entries dead: every claim would then re-read every row
# marked published since the last vacuum (hundreds of heap pages a claim, growing with the
# publish rate). The ordered index scan marks them as it passes, so the next claim skips them.
CLAIM_PLANNING = "SET LOCAL enable_bitmapscan = off"

MARK_PUBLISHED = """
UPDATE outbox SET published_at = clock_timestamp(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY(%(ids)s::bigint[])
"""

# The next try waits base * 2^attempts, capped, with jitter (50-100 %) so rows refused
# together do not all come back in the same claim.
RECORD_FAILURES = """
UPDATE outbox AS o SET attempts = o.attempts + 1, last_error = f.error,
    retry_at = clock_timestamp() + make_interval(secs => (0.5 + random() / 2)
        * least(%(retry_max_s)s, %(retry_base_s)s * 2 ^ least(o.attempts, 30)))
FROM unnest(%(failed_ids)s::bigint[], %(errors)s::text[]) AS f(id, error)
WHERE o.id = f.id
"""

# Batched and SKIP LOCKED so a purge never waits on, or holds up, a claiming relay.
# Idempotency records past their expiry are only replaced when their key comes back; the
# retention run deletes the rest so the table does not grow with every request ever made.
PURGE_EXPIRED_KEYS = """
DELETE FROM idempotency_keys WHERE ctid IN (
    SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
"""

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
    """One claimed outbox row, with the headers its message carries."""

    id: int
    event_id: str
    event_type: str
    routing_key: str
    payload: bytes
    headers: dict[str, Any]
    timestamp: int  # created_at in whole seconds (the AMQP timestamp property)


def claim(cur, limit: int, after: int = 0) -> list[OutboxRow]:
    """BEGIN and lock up to ``limit`` unpublished rows (others' locks skipped), oldest first.

    ``after`` starts the walk above that id (a hint, see ``Relay._claim_from``); 0 walks
    every unpublished row.
    """
    cur.execute(f"BEGIN; {CLAIM_PLANNING}; {CLAIM}", {"limit": limit, "after": after})
    return _rows(cur.fetchall())


@dataclasses.dataclass(frozen=True, slots=True)
class RetryDelay:
    """How long a refused row waits before it is claimed again: base doubling, capped."""

    base_s: float
    max_s: float


def settle(
    cur,
    acked: list[int],
    failures: dict[int, str],
    claim_limit: int = 0,
    commit: bool = True,
    retry: RetryDelay | None = None,
    claim_after: int = 0,
) -> list[OutboxRow]:
    """Mark confirmed rows, record failures and COMMIT; then BEGIN and claim the next rows.

    All in one round trip. ``commit=False`` skips the first part (nothing open to commit);
    ``claim_limit=0`` skips the second; ``claim_after`` is ``claim``'s ``after``. Returns
    the newly claimed rows. Recording ``failures`` needs ``retry`` (the relay's settings).
    """
    parts: list[str] = []
    params: dict[str, Any] = {}
    if commit:
        if acked:
            parts.append(MARK_PUBLISHED)
            params["ids"] = acked
        if failures:
            if retry is None:
                raise ValueError("recording failures needs a RetryDelay")
            ids = list(failures)
            parts.append(RECORD_FAILURES)
            params.update(
                failed_ids=ids,
                errors=[failures[i][:500] for i in ids],
                retry_base_s=retry.base_s,
                retry_max_s=retry.max_s,
            )
        parts.append("COMMIT")
    if claim_limit:
        parts += ["BEGIN", CLAIM_PLANNING, CLAIM]
        params.update(limit=claim_limit, after=claim_after)
    if not parts:
        return []
    cur.execute(";\n".join(parts), params)
    return _rows(cur.fetchall()) if claim_limit else []


def finish(cur, commit: bool = True) -> None:
    """End the open transaction: COMMIT (nothing claimed) or ROLLBACK (give rows back)."""
    cur.execute("COMMIT" if commit else "ROLLBACK")


def mark_published(cur, ids: list[int]) -> int:
    """Mark rows published (one statement); the caller commits."""
    if not ids:
        return 0
    cur.execute(MARK_PUBLISHED, {"ids": ids})
    return cur.rowcount


def _rows(rows: list[tuple]) -> list[OutboxRow]:
    return [OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), orjson.loads(r[5]), r[6]) for r in rows]


def purge_published(cur, older_than_s: float, limit: int) -> int:
    """Delete up to ``limit`` rows published more than ``older_than_s`` seconds ago."""
    cur.execute(PURGE_PUBLISHED, {"age_s": older_than_s, "limit": limit})
    return cur.rowcount


def purge_expired_keys(cur, limit: int) -> int:
    """Delete up to ``limit`` expired idempotency records."""
    cur.execute(PURGE_EXPIRED_KEYS, {"limit": limit})
    return cur.rowcount


def backlog(cur) -> tuple[int, float]:
    """Return (unpublished rows, age in seconds of the oldest one)."""
    cur.execute(BACKLOG)
    count, age = cur.fetchone()
    return int(count), float(age)
