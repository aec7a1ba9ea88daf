"""Event, outbox and status SQL: writes happen in the caller's transaction."""

from __future__ import annotations

from typing import Any

from psycopg2.extras import Json

EXISTING_ITEMS = "SELECT item_id FROM items WHERE item_id = ANY(%(ids)s)"

INSERT_EVENTS = """
INSERT INTO events (event_id, client_id, user_id, item_id, kind, occurred_at, request_id)
SELECT e.event_id::uuid, %(client_id)s, e.user_id, e.item_id, e.kind, e.occurred_at, %(request_id)s
FROM unnest(%(event_ids)s::text[], %(user_ids)s::text[], %(item_ids)s::bigint[],
            %(kinds)s::text[], %(occurred)s::timestamptz[])
     AS e(event_id, user_id, item_id, kind, occurred_at)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id::text
"""

INSERT_OUTBOX = """
INSERT INTO outbox (event_id, event_type, routing_key, payload, headers)
SELECT o.event_id::uuid, %(event_type)s, o.routing_key, o.payload, %(headers)s
FROM unnest(%(event_ids)s::text[], %(routing_keys)s::text[], %(payloads)s::bytea[])
     AS o(event_id, routing_key, payload)
"""

EVENT_STATUS = """
SELECT e.event_id::text, e.user_id, e.item_id, e.kind, e.received_at,
       o.published_at, (o.id IS NOT NULL) AS in_outbox,
       (SELECT min(applied_at) FROM inbox i WHERE i.event_id = e.event_id) AS applied_at
FROM events e
LEFT JOIN LATERAL (
    SELECT id, published_at FROM outbox WHERE outbox.event_id = e.event_id
    ORDER BY id LIMIT 1
) o ON true
WHERE e.event_id = %(event_id)s AND e.client_id = %(client_id)s
"""


def missing_items(cur, item_ids: list[int]) -> list[int]:
    """Return the item ids that are not in the catalogue."""
    wanted = sorted(set(item_ids))
    cur.execute(EXISTING_ITEMS, {"ids": wanted})
    found = {row[0] for row in cur.fetchall()}
    return [i for i in wanted if i not in found]


def insert_events(cur, client_id: str, request_id: str, events: list[dict[str, Any]]) -> set[str]:
    """Insert events, skipping known event ids; return the ids that were new."""
    cur.execute(
        INSERT_EVENTS,
        {
            "client_id": client_id,
            "request_id": request_id,
            "event_ids": [e["event_id"] for e in events],
            "user_ids": [e["user_id"] for e in events],
            "item_ids": [e["item_id"] for e in events],
            "kinds": [e["kind"] for e in events],
            "occurred": [e["occurred_at"] for e in events],
        },
    )
    return {row[0] for row in cur.fetchall()}


def insert_outbox(
    cur, event_type: str, rows: list[tuple[str, str, bytes]], headers: dict[str, Any]
) -> None:
    """Insert one outbox row per (event_id, routing_key, payload)."""
    if not rows:
        return
    cur.execute(
        INSERT_OUTBOX,
        {
            "event_type": event_type,
            "event_ids": [r[0] for r in rows],
            "routing_keys": [r[1] for r in rows],
            "payloads": [r[2] for r in rows],
            "headers": Json(headers),
        },
    )


def event_status(cur, client_id: str, event_id: str) -> dict[str, Any] | None:
    """Return where an event is (accepted, published, applied), or None if not this client's."""
    cur.execute(EVENT_STATUS, {"event_id": event_id, "client_id": client_id})
    row = cur.fetchone()
    if row is None:
        return None
    event_id, user_id, item_id, kind, received_at, published_at, in_outbox, applied_at = row
    if applied_at is not None:
        status = "applied"
    elif published_at is not None or not in_outbox:
        status = "published"  # a purged outbox row was published before retention removed it
    else:
        status = "accepted"
    return {
        "event_id": event_id,
        "status": status,
        "user_id": user_id,
        "item_id": item_id,
        "kind": kind,
        "accepted_at": received_at.isoformat(),
        "published_at": published_at.isoformat() if published_at else None,
        "applied_at": applied_at.isoformat() if applied_at else None,
    }
