"""Message encoding by the relay and decoding, with poison detection, by the consumer."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pika
import pytest

from service.events import InteractionRecorded, PoisonMessage
from workers.messages import (
    CREATED_AT,
    DEAD_REASON,
    OUTBOX_ID,
    dead_letter_headers,
    parse_created_at,
    properties_for,
    read_delivery,
)

CREATED = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
HEADERS = {"request_id": "req-1", "correlation_id": "corr-1", "event_version": 1}


def _event(**changes) -> InteractionRecorded:
    fields = {
        "event_id": str(uuid.uuid4()),
        "client_id": "dev",
        "user_id": "user-1",
        "item_id": 42,
        "kind": "click",
        "occurred_at": "2026-01-02T03:04:00+00:00",
        **changes,
    }
    return InteractionRecorded(**fields)


def _props(event: InteractionRecorded, **overrides) -> pika.BasicProperties:
    props = properties_for(7, event.event_id, event.TYPE, HEADERS, CREATED)
    for name, value in overrides.items():
        setattr(props, name, value)
    return props


def test_properties_make_a_persistent_message_identified_by_the_event():
    event = _event()
    props = _props(event)
    assert props.message_id == event.event_id
    assert props.type == "interaction.recorded"
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.correlation_id == "corr-1"
    assert props.timestamp == int(CREATED.timestamp())
    assert props.headers == {
        **HEADERS,
        CREATED_AT: "2026-01-02T03:04:05.678901+00:00",
        OUTBOX_ID: 7,
    }


def test_a_delivery_round_trips_with_its_ids_and_creation_time():
    event = _event()
    delivered = read_delivery(_props(event), event.to_payload())
    assert delivered.event == event
    assert delivered.created_at == CREATED
    assert (delivered.request_id, delivered.correlation_id) == ("req-1", "corr-1")


def test_routing_key_follows_the_event_type_and_kind():
    assert _event(kind="purchase").routing_key == "interaction.recorded.purchase"


@pytest.mark.parametrize(
    ("body", "overrides", "reason"),
    [
        (b"\xff not json", {}, "undecodable"),
        (b"[1, 2]", {}, "not a JSON object"),
        (None, {"type": "order.placed"}, "unknown message type"),
        (None, {"headers": {**HEADERS, "event_version": 2}}, "unsupported event_version"),
        (None, {"message_id": "another-id"}, "message_id does not match"),
        ({"version": 9}, {}, "unsupported version"),
        ({"type": "item.deleted"}, {}, "unknown event type"),
        ({"item_id": "42"}, {}, "invalid item_id"),
        ({"kind": "like"}, {}, "invalid kind"),
        ({"event_id": "not-a-uuid"}, {}, "invalid interaction.recorded"),
        ({"occurred_at": "yesterday"}, {}, "invalid occurred_at"),
        (b"{" + b" " * 20_000 + b"}", {}, "larger than"),
    ],
)
def test_poison_is_recognised_with_a_reason(body, overrides, reason):
    event = _event()
    if body is None:
        payload = event.to_payload()
    elif isinstance(body, dict):
        payload = orjson.dumps({**orjson.loads(event.to_payload()), **body})
    else:
        payload = body
    with pytest.raises(PoisonMessage, match=reason):
        read_delivery(_props(event, **overrides), payload)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-02T03:04:05+00:00", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
        (b"2026-01-02T03:04:05", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
        ("garbage", None),
        (None, None),
        (12, None),
    ],
)
def test_created_at_header_is_parsed_leniently(value, expected):
    assert parse_created_at(value) == expected


def test_a_missing_created_at_header_is_not_poison():
    event = _event()
    props = _props(event, headers={"request_id": "r"})
    delivered = read_delivery(props, event.to_payload())
    assert delivered.created_at is None and delivered.correlation_id == "corr-1"


def test_dead_letter_headers_keep_the_original_ones_and_add_the_reason():
    event = _event()
    headers = dead_letter_headers(_props(event), "x" * 5000, "interaction.recorded.click", "ex")
    assert headers["request_id"] == "req-1"
    assert len(headers[DEAD_REASON]) == 1000
    assert headers["x-reco-original-routing-key"] == "interaction.recorded.click"
    assert headers["x-reco-original-exchange"] == "ex"
    assert dt.datetime.fromisoformat(headers["x-reco-dead-at"]).tzinfo is not None


def test_the_claim_builds_the_same_header_names_the_consumer_reads():
    from workers.outbox import CLAIM

    assert f"'{CREATED_AT}', created_at" in CLAIM and f"'{OUTBOX_ID}', id" in CLAIM
