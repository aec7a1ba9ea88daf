"""Encode outbox rows as AMQP messages and read the worker headers back from deliveries."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pika

from service import wallclock
from service.events import InteractionRecorded, PoisonMessage, decode, message_properties

CREATED_AT = "created_at"  # outbox created_at, so the consumer can store inbox.event_created
OUTBOX_ID = "outbox_id"  # lets the relay match a basic.return to its row
DEAD_REASON = "x-reco-dead-reason"
DEAD_AT = "x-reco-dead-at"
ORIGINAL_ROUTING_KEY = "x-reco-original-routing-key"
ORIGINAL_EXCHANGE = "x-reco-original-exchange"


def properties_for(
    row_id: int, event_id: str, event_type: str, headers: dict[str, Any], created_at: dt.datetime
) -> pika.BasicProperties:
    """Build persistent message properties: message_id = event id, type = event type."""
    merged = dict(headers)
    merged[CREATED_AT] = created_at.isoformat()
    merged[OUTBOX_ID] = row_id
    return properties(event_id, event_type, merged, int(created_at.timestamp()))


def properties(
    event_id: str, event_type: str, headers: dict[str, Any], timestamp: int
) -> pika.BasicProperties:
    """Message properties from headers that already carry created_at and outbox_id."""
    props = message_properties(event_id, event_type, headers)
    props["timestamp"] = timestamp
    return pika.BasicProperties(**props)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """A decoded delivery: the event plus the ids worth logging and the outbox timestamp."""

    event: InteractionRecorded
    created_at: dt.datetime | None
    request_id: str | None
    correlation_id: str | None


def read_delivery(properties: pika.BasicProperties, body: bytes) -> Delivered:
    """Decode a delivery; raise PoisonMessage with the reason if it can never be applied."""
    headers = properties.headers or {}
    version = headers.get("event_version")
    if version is not None and version != InteractionRecorded.VERSION:
        raise PoisonMessage(f"unsupported event_version header {version!r}")
    event = decode(properties.type, body)
    if properties.message_id not in (None, event.event_id):
        raise PoisonMessage("message_id does not match the event id in the body")
    return Delivered(
        event=event,
        created_at=parse_created_at(headers.get(CREATED_AT)),
        request_id=_str_or_none(headers.get("request_id")),
        correlation_id=_str_or_none(headers.get("correlation_id") or properties.correlation_id),
    )


def parse_created_at(value: Any) -> dt.datetime | None:
    """Parse the created_at header; a missing or malformed one is not fatal (latency unknown)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def dead_letter_headers(
    properties: pika.BasicProperties, reason: str, routing_key: str, exchange: str
) -> dict[str, Any]:
    """Headers of a dead-lettered copy: the original ones plus why, when and where from."""
    headers = dict(properties.headers or {})
    headers[DEAD_REASON] = reason[:1000]
    headers[DEAD_AT] = dt.datetime.fromtimestamp(wallclock.now(), dt.UTC).isoformat()
    headers[ORIGINAL_ROUTING_KEY] = routing_key
    headers[ORIGINAL_EXCHANGE] = exchange
    return headers


def copy_properties(
    properties: pika.BasicProperties, headers: dict[str, Any]
) -> pika.BasicProperties:
    """A persistent copy's properties: the original's identity and type, with ``headers``."""
    return pika.BasicProperties(
        content_type=properties.content_type,
        delivery_mode=2,
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        type=properties.type,
        timestamp=properties.timestamp,
        headers=headers,
    )


def _str_or_none(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None
