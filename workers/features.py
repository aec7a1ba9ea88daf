"""Feature-table SQL of the consumer: one statement applies a batch exactly once per event.

The inbox insert (ON CONFLICT DO NOTHING) decides which events are new; only those reach the
commutative upserts, all in the caller's transaction. Rows are grouped per key (one upsert
per row) and ordered, so concurrent consumers lock rows in the same order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from service.events import KIND_WEIGHTS

_BATCH = """
WITH batch AS (
    SELECT b.*, i.category_id
    FROM unnest(
        %(event_ids)s::uuid[], %(created)s::timestamptz[], %(users)s::text[],
        %(items)s::bigint[], %(kinds)s::text[], %(weights)s::float8[],
        %(occurred)s::timestamptz[]
    ) AS b(event_id, event_created, user_id, item_id, kind, weight, occurred_at)
    LEFT JOIN items i ON i.item_id = b.item_id
),
"""

_FRESH_WITH_INBOX = """
fresh AS (
    INSERT INTO inbox (consumer, event_id, event_created)
    SELECT %(consumer)s, event_id, event_created FROM batch ORDER BY event_id
    ON CONFLICT (consumer, event_id) DO NOTHING
    RETURNING event_id
),
"""

# Negative control only (consumer_skip_inbox): every delivery counts as new.
_FRESH_WITHOUT_INBOX = """
fresh AS (SELECT DISTINCT event_id FROM batch),
"""

_UPSERTS = """
applied AS (SELECT b.* FROM batch b JOIN fresh f USING (event_id)),
popularity AS (
    INSERT INTO item_popularity AS p
        (item_id, category_id, views, clicks, purchases, score, last_at)
    SELECT item_id, min(category_id),
           count(*) FILTER (WHERE kind = 'view'),
           count(*) FILTER (WHERE kind = 'click'),
           count(*) FILTER (WHERE kind = 'purchase'),
           sum(weight), max(occurred_at)
    FROM applied
    GROUP BY item_id ORDER BY item_id
    ON CONFLICT (item_id) DO UPDATE SET
        views = p.views + EXCLUDED.views,
        clicks = p.clicks + EXCLUDED.clicks,
        purchases = p.purchases + EXCLUDED.purchases,
        score = p.score + EXCLUDED.score,
        last_at = GREATEST(p.last_at, EXCLUDED.last_at)
    RETURNING 1
),
affinity AS (
    INSERT INTO user_category_affinity AS u (user_id, category_id, weight)
    SELECT user_id, category_id, sum(weight)
    FROM applied WHERE category_id IS NOT NULL
    GROUP BY user_id, category_id ORDER BY user_id, category_id
    ON CONFLICT (user_id, category_id) DO UPDATE SET weight = u.weight + EXCLUDED.weight
    RETURNING 1
),
interactions AS (
    INSERT INTO user_item_interactions AS x (user_id, item_id, interactions, last_at)
    SELECT user_id, item_id, count(*), max(occurred_at)
    FROM applied
    GROUP BY user_id, item_id ORDER BY user_id, item_id
    ON CONFLICT (user_id, item_id) DO UPDATE SET
        interactions = x.interactions + EXCLUDED.interactions,
        last_at = GREATEST(x.last_at, EXCLUDED.last_at)
    RETURNING 1
)
SELECT event_id::text FROM fresh
"""

APPLY_BATCH = _BATCH + _FRESH_WITH_INBOX + _UPSERTS
APPLY_BATCH_WITHOUT_INBOX = _BATCH + _FRESH_WITHOUT_INBOX + _UPSERTS
PARAMS = ("event_ids", "created", "users", "items", "kinds", "weights", "occurred", "consumer")
# Text arrays in, casts in the statement: timestamps and ids arrive as strings from Python.
PARAM_TYPES = "text[], text[], text[], bigint[], text[], float8[], text[], text"
PREPARED = {"apply_batch": APPLY_BATCH, "apply_batch_without_inbox": APPLY_BATCH_WITHOUT_INBOX}


def prepare(cur) -> None:
    """PREPARE the batch statements on this connection: planning once saves ~1 ms a batch."""
    for name, sql in PREPARED.items():
        for index, param in enumerate(PARAMS, start=1):
            sql = sql.replace(f"%({param})s", f"${index}")
        cur.execute(f"PREPARE {name} ({PARAM_TYPES}) AS {sql}")


@dataclasses.dataclass(frozen=True, slots=True)
class Interaction:
    """The fields of one event the feature update needs."""

    event_id: str
    event_created: dt.datetime | None
    user_id: str
    item_id: int
    kind: str
    occurred_at: str


def apply_batch(cur, consumer: str, events: list[Interaction], skip_inbox: bool = False) -> set:
    """Apply events not yet in the inbox for ``consumer``; return the ids applied now.

    The connection must have been through prepare().
    """
    if not events:
        return set()
    name = "apply_batch_without_inbox" if skip_inbox else "apply_batch"
    cur.execute(
        f"EXECUTE {name} (%s, %s, %s, %s, %s, %s, %s, %s)",  # noqa: S608 - fixed names
        (
            [e.event_id for e in events],
            [e.event_created.isoformat() if e.event_created else None for e in events],
            [e.user_id for e in events],
            [e.item_id for e in events],
            [e.kind for e in events],
            [KIND_WEIGHTS[e.kind] for e in events],
            [e.occurred_at for e in events],
            consumer,
        ),
    )
    return {row[0] for row in cur.fetchall()}
