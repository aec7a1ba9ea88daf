"""Regression tests for what the contract tier found in the service (fixed, not allow-listed)."""

from __future__ import annotations

import io
import uuid

import psycopg2
import pytest

from harness.pytest_plugins.service import API_KEY
from service.events import InteractionRecorded


def _post(client, event: dict):
    return client.post(
        "/v1/events",
        json={"events": [event]},
        headers={"X-API-Key": API_KEY, "Idempotency-Key": f'"{uuid.uuid4()}"'},
    )


def _event(**overrides) -> dict:
    event = {
        "event_id": str(uuid.uuid4()),
        "user_id": "u-contract",
        "item_id": 7,
        "kind": "click",
        "occurred_at": "2026-11-29T10:00:00Z",
    }
    event.update(overrides)
    return event


def _outbox_payload(database_url: str, event_id: str) -> bytes:
    conn = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT payload FROM outbox WHERE event_id = %s", (event_id,))
            return bytes(cur.fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        # RFC 3339 offsets reach ±23:59; PostgreSQL refused beyond ±15:59 (a 500 before the fix).
        ("1976-04-22T03:47:13-19:03", "1976-04-22T22:50:13+00:00"),
        ("2026-11-29T10:00:00+23:59", "2026-11-28T10:01:00+00:00"),
        # RFC 3339 allows lower-case t and z; the consumer's fromisoformat does not (poison).
        ("2026-11-29t10:00:00z", "2026-11-29T10:00:00+00:00"),
        ("2026-11-29T10:00:00.123456789Z", "2026-11-29T10:00:00.123456+00:00"),
        ("2026-11-29T10:00:00+02:00", "2026-11-29T10:00:00+02:00"),
        # A leap second is schema-valid; Python has no second 60 (it was a 422 "out of range").
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999999+00:00"),
        ("2016-12-31T22:59:60.25-01:00", "2016-12-31T22:59:59.999999-01:00"),
    ],
)
def test_rfc3339_timestamps_are_stored_in_a_form_every_reader_accepts(
    contract_app, contract_database_url, sent, stored
):
    """Schema-valid timestamps are accepted and reach the outbox in canonical ISO form."""
    event = _event(occurred_at=sent)
    response = _post(contract_app.test_client(), event)
    assert response.status_code == 202, response.get_json()
    message = InteractionRecorded.from_payload(
        _outbox_payload(contract_database_url, event["event_id"])
    )
    assert message.occurred_at == stored


def test_integral_float_item_id_reaches_the_consumer_as_an_integer(
    contract_app, contract_database_url
):
    """17.0 is a JSON Schema integer; the outbox message must carry 17, or the consumer drops it."""
    event = _event(item_id=17.0)
    response = _post(contract_app.test_client(), event)
    assert response.status_code == 202, response.get_json()
    message = InteractionRecorded.from_payload(
        _outbox_payload(contract_database_url, event["event_id"])
    )
    assert message.item_id == 17 and type(message.item_id) is int


def test_unrepresentable_timestamp_is_a_422_with_a_pointer(contract_app):
    """A +19:00 offset on 0001-01-01 has no UTC instant in range: 422, never a 500."""
    response = _post(contract_app.test_client(), _event(occurred_at="0001-01-01T00:00:00+19:00"))
    assert response.status_code == 422
    assert response.get_json()["errors"] == [
        {"pointer": "/events/0/occurred_at", "detail": "out of range"}
    ]


def test_year_zero_is_outside_the_document_and_refused_by_its_schema(contract_app):
    """RFC 3339 admits 0000; the document's pattern excludes it, and the service says so."""
    import jsonschema_rs

    from service.openapi import validator

    event = _event(occurred_at="0000-01-01T00:00:00Z")
    assert jsonschema_rs.validator_for({"format": "date-time"}, validate_formats=True).is_valid(
        event["occurred_at"]
    )
    assert not validator("components/schemas/Event").is_valid(event)
    response = _post(contract_app.test_client(), event)
    assert response.status_code == 422
    assert response.get_json()["type"] == "/problems/validation-error"
    assert [e["pointer"] for e in response.get_json()["errors"]] == ["/events/0/occurred_at"]


def test_any_request_id_is_tolerated_and_replaced(contract_app):
    """The document no longer bounds X-Request-ID: the server never rejects a tracing header."""
    response = contract_app.test_client().get(
        "/v1/users/u-1/recommendations", headers={"X-API-Key": API_KEY, "X-Request-ID": "x" * 300}
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] != "x" * 300


@pytest.mark.parametrize("key", ['"abc', 'abc"', '""'])
def test_half_quoted_idempotency_keys_are_outside_the_documented_pattern(contract_app, key):
    """The document's pattern and the server agree: a key quoted on one side only is a 400."""
    import re

    from service.openapi import document

    parameter = document()["paths"]["/v1/events"]["post"]["parameters"][0]
    assert not re.search(parameter["schema"]["pattern"], key)
    response = contract_app.test_client().post(
        "/v1/events",
        json={"events": [_event()]},
        headers={"X-API-Key": API_KEY, "Idempotency-Key": key},
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "spelling",
    [
        lambda u: u.replace("-", ""),
        lambda u: "{" + u + "}",
        lambda u: "urn:uuid:" + u,
        lambda u: u[:7] + "-" + u[7] + u[9:],
    ],
    ids=["no-hyphens", "braces", "urn", "misplaced-hyphen"],
)
def test_event_ids_outside_the_documented_uuid_format_are_400(contract_app, spelling):
    """uuid.UUID reads these spellings of a stored event's id; format: uuid does not."""
    client = contract_app.test_client()
    event = _event()
    assert _post(client, event).status_code == 202
    headers = {"X-API-Key": API_KEY}
    assert client.get(f"/v1/events/{event['event_id'].upper()}", headers=headers).status_code == 200
    response = client.get(f"/v1/events/{spelling(event['event_id'])}", headers=headers)
    assert response.status_code == 400, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"] == "/problems/validation-error"


GETS = [
    "/v1/users/u-1/recommendations",
    "/v1/events/6f1c2c4e-8c2a-4e0e-9a53-0c6b1b7b2a10",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
]


def _get_with_body(client, path: str, body: bytes, chunked: bool):
    if not chunked:
        return client.get(path, data=body, headers={"X-API-Key": API_KEY})
    return client.get(
        path,
        input_stream=io.BytesIO(body),
        headers={"X-API-Key": API_KEY, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", GETS)
def test_a_get_with_a_body_over_the_limit_is_413_as_documented(contract_app, path, chunked):
    """Every GET documents 413; views never read a body, so it is refused before them."""
    client = contract_app.test_client()
    limit = contract_app.config["MAX_CONTENT_LENGTH"]
    response = _get_with_body(client, path, b"x" * (limit + 1), chunked)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"] == "/problems/content-too-large"
    # A body within the limit is read and ignored.
    assert _get_with_body(client, path, b"x" * limit, chunked).status_code in (200, 404)


@pytest.mark.parametrize("path", ["/healthz", "/v1/users/u1/recommendations"])
def test_a_post_body_over_the_limit_to_a_path_without_a_post_view_is_413(contract_app, path):
    """Only POST /v1/events reads a body: a POST elsewhere is size-checked like a GET."""
    client = contract_app.test_client()
    limit = contract_app.config["MAX_CONTENT_LENGTH"]
    response = client.post(path, data=b"x" * (limit + 1), headers={"X-API-Key": API_KEY})
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert client.post(path, data=b"x", headers={"X-API-Key": API_KEY}).status_code == 405
