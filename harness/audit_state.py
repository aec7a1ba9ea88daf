"""What the audit reads from the database: one snapshot of inbox, effects and events."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg2

from harness.smoke import SMOKE_USER_PREFIX

INBOX_IDS = "SELECT event_id::text FROM inbox WHERE consumer = %(consumer)s"
EVENT_IDS = "SELECT event_id::text FROM events"
# Post-deploy smoke checks write under reserved user ids (harness.smoke), on any stack.
TAGGED_IDS = "SELECT event_id::text FROM events WHERE starts_with(user_id, %(prefix)s)"
OUTBOX_IDS = "SELECT DISTINCT event_id::text FROM outbox"
# Effects short of what the applied events name, row by row (a per-table sum would not see
# one event's effect landing on another item): "table key" -> how many are missing there.
SHORT_ROWS = """
WITH applied AS (
    SELECT e.item_id, e.user_id, e.kind
    FROM inbox i JOIN events e USING (event_id)
    WHERE i.consumer = %(consumer)s
), items AS (
    SELECT item_id,
           count(*) FILTER (WHERE kind = 'view') AS views,
           count(*) FILTER (WHERE kind = 'click') AS clicks,
           count(*) FILTER (WHERE kind = 'purchase') AS purchases
    FROM applied GROUP BY item_id
), pairs AS (
    SELECT user_id, item_id, count(*) AS n FROM applied GROUP BY user_id, item_id
)
SELECT 'item_popularity ' || x.item_id || ' ' || k.kind, k.expected - k.actual
FROM items x LEFT JOIN item_popularity p USING (item_id)
CROSS JOIN LATERAL (VALUES
    ('views', x.views, coalesce(p.views, 0)),
    ('clicks', x.clicks, coalesce(p.clicks, 0)),
    ('purchases', x.purchases, coalesce(p.purchases, 0))
) AS k(kind, expected, actual)
WHERE k.actual < k.expected
UNION ALL
SELECT 'user_item_interactions ' || x.user_id || ' ' || x.item_id,
       x.n - coalesce(u.interactions, 0)
FROM pairs x LEFT JOIN user_item_interactions u USING (user_id, item_id)
WHERE coalesce(u.interactions, 0) < x.n
"""
EFFECTS = """
SELECT (SELECT COALESCE(sum(views + clicks + purchases), 0) FROM item_popularity),
       (SELECT COALESCE(sum(interactions), 0) FROM user_item_interactions)
"""


@dataclasses.dataclass(frozen=True)
class State:
    """Inbox, effects, events and outbox as one snapshot of the database."""

    applied: set[str]
    effects: tuple[int, int]
    events: set[str]
    outbox: set[str]
    tagged: set[str]  # events written by smoke checks
    short: dict[str, int]  # SHORT_ROWS


def snapshot(database_url: str, consumer: str) -> State:
    """Read everything the reconciliation compares in one REPEATABLE READ transaction.

    Read statement by statement, a batch the consumer commits in between would count in the
    effects but not in the inbox (or the other way round): a balance off by that batch.
    """
    conn = psycopg2.connect(database_url, connect_timeout=5)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            applied = ids(cur, INBOX_IDS, {"consumer": consumer})
            cur.execute(EFFECTS)
            popularity, interactions = (int(v) for v in cur.fetchone())
            events = ids(cur, EVENT_IDS)
            outbox = ids(cur, OUTBOX_IDS)
            tagged = ids(cur, TAGGED_IDS, {"prefix": SMOKE_USER_PREFIX})
            cur.execute(SHORT_ROWS, {"consumer": consumer})
            short = {key: int(n) for key, n in cur.fetchall()}
        conn.rollback()
    finally:
        conn.close()
    return State(applied, (popularity, interactions), events, outbox, tagged, short)


def misplaced(short: dict[str, int], before: dict[str, int]) -> tuple[int, list[str]]:
    """Effects this run left short, counted in events (the larger of the two tables)."""
    added = {key: n - before.get(key, 0) for key, n in short.items() if n > before.get(key, 0)}
    per_table: dict[str, int] = {}
    for key, n in added.items():
        table = key.split(" ", 1)[0]
        per_table[table] = per_table.get(table, 0) + n
    return max(per_table.values(), default=0), sorted(added)


def ids(cur, sql: str, params: dict[str, Any] | None = None) -> set[str]:
    cur.execute(sql, params or {})
    return {row[0] for row in cur.fetchall()}
