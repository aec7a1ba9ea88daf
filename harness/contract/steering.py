"""Steer generated valid event batches into what the service can accept, so its 202 path is fuzzed.

JSON Schema cannot say "an item of the catalogue" or "not after now": drawn from the schema
alone, item_id spans 1..2^31-1 and occurred_at years 0001-9999, and almost every valid batch
is refused (422 unknown-item or event-in-future). Idempotency-Key values are drawn from a
small space too, so most of the rest reuse a key with another body (422). A `map_case` hook
moves those two fields, in positive cases only, into the seeded catalogue and into the past,
and suffixes the key with a digest of the body (the same key then always means the same
body: a replay). Everything else the schema allows (ids, kinds, offsets, fractions, leap
seconds, 17.0 for 17, quoted or bare keys) is left as drawn. Negative cases are never
touched: each must stay invalid.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

EVENTS = "POST /v1/events"
SEEDED_ITEMS = 5000  # migrations/sql/0001_catalogue.sql seeds items 1..5000 (a test checks)
FIRST_FUTURE_YEAR = 2020  # years from here on may lie ahead of the service's clock
KEY_HEADER = "Idempotency-Key"
_KEY_CORE = re.compile(r"[A-Za-z0-9._:\-]{1,238}")  # leaves room for "." and 16 hex digits


def in_catalogue(item_id: Any) -> Any:
    """An integral item_id folded into 1..SEEDED_ITEMS, keeping its JSON type (17 or 17.0)."""
    if isinstance(item_id, bool) or not isinstance(item_id, int | float):
        return item_id
    if item_id != int(item_id) or item_id < 1:
        return item_id
    folded = (int(item_id) - 1) % SEEDED_ITEMS + 1
    return float(folded) if isinstance(item_id, float) else folded


def in_the_past(moment: Any) -> Any:
    """An RFC 3339 date-time from 2020 on moved to a year of 1972-2019; the rest stays as drawn.

    The new year has the old one's remainder modulo 4, so a drawn 29 February stays a date
    (every year that can carry it maps to a leap year of 1972-2016).
    """
    if not isinstance(moment, str) or not moment[:4].isdigit():
        return moment
    year = int(moment[:4])
    if year < FIRST_FUTURE_YEAR:
        return moment
    past = 1972 + 4 * ((year // 4) % 12) + year % 4
    return f"{past:04d}{moment[4:]}"


def keyed_to(key: Any, body: Any) -> Any:
    """The drawn Idempotency-Key with a digest of ``body`` appended, quoted as it was drawn."""
    if not isinstance(key, str):
        return key
    quoted = len(key) >= 2 and key[0] == key[-1] == '"'
    core = key[1:-1] if quoted else key
    if not _KEY_CORE.fullmatch(core):
        return key
    canonical = json.dumps(body, sort_keys=True, default=str).encode()
    core = f"{core}.{hashlib.sha256(canonical).hexdigest()[:16]}"
    return f'"{core}"' if quoted else core


def steer_events(context: Any, case: Any) -> Any:
    """`map_case` hook for positive cases: items in the catalogue, times past, keys per body."""
    from schemathesis import GenerationMode

    if case.operation.label != EVENTS or case.meta is None:
        return case
    if case.meta.generation.mode is not GenerationMode.POSITIVE:
        return case
    body = case.body
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        return case
    steered = [
        {
            **event,
            **({"item_id": in_catalogue(event["item_id"])} if "item_id" in event else {}),
            **(
                {"occurred_at": in_the_past(event["occurred_at"])} if "occurred_at" in event else {}
            ),
        }
        if isinstance(event, dict)
        else event
        for event in events
    ]
    case.body = {**body, "events": steered}  # assigned, so Schemathesis sees the change
    headers = dict(case.headers or {})
    for name in [n for n in headers if n.lower() == KEY_HEADER.lower()]:
        headers[name] = keyed_to(headers[name], case.body)
    case.headers = headers
    return case


def install(hooks: Any) -> None:
    """Register the steering hook with ``schema.hook`` or globally with ``schemathesis.hook``."""
    hooks("map_case")(steer_events)
