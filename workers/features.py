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
    SELECT * FROM unnest(
        %(event_ids)s::uuid[], %(created)s::timestamptz[], %(users)s::text[],
        %(items)s::bigint[], %(kinds)s::text[], %(weights)s::float8[],
        %(occurred)s::timestamptz[]
    ) AS b(event_id, event_created, user_id, item_id, kind, weight, occurred_at)
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
    SELECT a.item_id, min(i.category_id),
           count(*) FILTER (WHERE a.kind = 'view'),
           count(*) FILTER (WHERE a.kind = 'click'),
           count(*) FILTER (WHERE a.kind = 'purchase'),
           sum(a.weight), max(a.occurred_at)
    FROM applied a LEFT JOIN items i ON i.item_id = a.item_id
    GROUP BY a.item_id ORDER BY a.item_id
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
    SELECT a.user_id, i.category_id, sum(a.weight)
    FROM applied a JOIN items i ON i.item_id = a.item_id
    GROUP BY a.user_id, i.category_id ORDER BY a.user_id, i.category_id
    ON CONFLICT (user_id, category_id) DO UPDATE SET weight = u.weight + EXCLUDED.weight
    RETURNING 1
),
interactions AS (
    INSERT INTO user_item_interactions AS x (user_id, item_id, interactions, last_at)
    SELECT a.user_id, a.item_id, count(*), max(a.occurred_at)
    FROM applied a
    GROUP BY a.user_id, a.item_id ORDER BY a.user_id, a.item_id
    ON CONFLICT (user_id, item_id) DO UPDATE SET
        interactions = x.interactions + EXCLUDED.interactions,
        last_at = GREATEST(x.last_at, EXCLUDED.last_at)
    RETURNING 1
)
SELECT event_id::text FROM fresh
"""

APPLY_BATCH = _BATCH + _FRESH_WITH_INBOX + _UPSERTS
APPLY_BATCH_WITHOUT_INBOX = _BATCH + _FRESH_WITHOUT_INBOX + _UPSERTS


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
    """Apply events not yet in the inbox for ``consumer``; return the ids applied now."""
    if not events:
        return set()
    cur.execute(
        APPLY_BATCH_WITHOUT_INBOX if skip_inbox else APPLY_BATCH,
        {
            "consumer": consumer,
            "event_ids": [e.event_id for e in events],
            "created": [e.event_created for e in events],
            "users": [e.user_id for e in events],
            "items": [e.item_id for e in events],
            "kinds": [e.kind for e in events],
            "weights": [KIND_WEIGHTS[e.kind] for e in events],
            "occurred": [e.occurred_at for e in events],
        },
    )
    return {row[0] for row in cur.fetchall()}
