"""POST /v1/events (idempotent, transactional outbox) and GET /v1/events/{event_id}."""

from __future__ import annotations

import collections
import datetime as dt
import time
import uuid

from flask import Blueprint, Response, g, request

from service import idempotency, openapi, strict_json, wallclock
from service.api.common import client_id, json_response, runtime, shed
from service.db import events as events_repo
from service.events import InteractionRecorded
from service.middleware import body_within_limit
from service.problems import ApiProblem

blueprint = Blueprint("events", __name__)


BATCH = "components/schemas/EventBatch"
EVENT_ID = "paths/~1v1~1events~1{event_id}/get/parameters/0/schema"


def _read_body() -> dict:
    """Parse the JSON body strictly and validate it against the EventBatch schema."""
    _check_media_type()
    raw = body_within_limit(request._get_current_object())  # type: ignore[attr-defined]
    try:
        body = strict_json.loads(raw)
    except strict_json.JsonRejected as exc:
        raise ApiProblem(400, "malformed-json", str(exc)) from None
    _check_batch_size(body)
    openapi.validate(body, BATCH)
    return body


def _check_media_type() -> None:
    """Accept only application/json in UTF-8 without a content coding (else 415)."""
    if request.mimetype != "application/json":
        raise ApiProblem(415, "unsupported-media-type", "send the body as application/json")
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.lower() != "utf-8":
        # The body is always decoded as UTF-8: any other declared charset would be misread.
        raise ApiProblem(415, "unsupported-media-type", "send the body as UTF-8 (charset=utf-8)")
    # One lookup, not getlist(): that walks every header, and the WSGI environ holds one
    # value per name anyway (the server joins repeated headers with commas).
    encoding = request.headers.get("Content-Encoding")
    codings = [] if encoding is None else [c.strip().lower() for c in encoding.split(",")]
    if any(coding != "identity" for coding in codings):
        # Bodies are never decompressed (no zip bombs); RFC 9110 names what would be accepted.
        raise ApiProblem(
            415,
            "unsupported-media-type",
            "send the body without a Content-Encoding: it is not decompressed",
            headers={"Accept-Encoding": "identity"},
        )


def _check_batch_size(body: object) -> None:
    """Refuse an over-long batch before the schema check, which would report each of its items."""
    # jsonschema-rs builds every error before the first is read: 130 000 bad items cost 1.3 s.
    events = body.get("events") if isinstance(body, dict) else None
    limit = openapi.keyword(f"{BATCH}/properties/events", "maxItems")
    if isinstance(events, list) and len(events) > limit:
        raise ApiProblem(
            422,
            "validation-error",
            "the body does not match the schema",
            errors=[{"pointer": "/events", "detail": f"more than {limit} events"}],
        )


@blueprint.post("/v1/events")
def post_events() -> Response:
    """Commit new events, their outbox rows and the idempotency record in one transaction."""
    client = client_id()
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    body = _read_body()
    events = body["events"]
    fingerprint = idempotency.fingerprint(request.method, request.path, body)
    rt = runtime()
    _normalise_ids(body, rt.settings.event_max_future_s)
    _cap_events_per_user(rt, events)
    messages = [
        InteractionRecorded(
            event_id=e["event_id"],
            client_id=client,
            user_id=e["user_id"],
            item_id=e["item_id"],
            kind=e["kind"],
            occurred_at=e["occurred_at"],
        )
        for e in events
    ]
    request_facts = {
        "client_id": client,
        "key": key,
        "lock_key": idempotency.lock_key(client, key),
        "fingerprint": fingerprint,
        "ttl_s": rt.settings.idempotency_ttl_s,
        "request_id": g.request_id,
    }
    outbox = {
        "event_type": InteractionRecorded.TYPE,
        "headers": {
            "request_id": g.request_id,
            "correlation_id": g.correlation_id,
            "event_version": InteractionRecorded.VERSION,
        },
        "routing_keys": [m.routing_key for m in messages],
        "payloads": [m.to_payload() for m in messages],
    }
    # Two round trips: BEGIN with the whole write, then COMMIT (a refusal or replay rolls
    # back as the unit of work closes). A lost answer to COMMIT is a 504, never a 503.
    budget = rt.settings.write_deadline_ms / 1000
    with rt.db.unit_of_work(budget, autocommit=True) as uow:
        sent = time.monotonic()
        with uow.cursor() as cur:
            result = events_repo.accept(cur, request_facts, events, outbox)
        if result.outcome == "accepted":
            uow.commit(round_trip_s=time.monotonic() - sent)
    if result.outcome == "in_flight":
        rt.metrics.idempotency.labels("in_flight").inc()
        raise ApiProblem(
            409,
            "idempotency-key-in-flight",
            "a request with this Idempotency-Key is still being processed",
            headers={"Retry-After": "1"},
        )
    if result.outcome == "replay":
        return _replay(result, fingerprint)
    if result.outcome == "unknown_items":
        missing = set(result.missing_items)
        raise ApiProblem(
            422,
            "unknown-item",
            "events refer to items not in the catalogue",
            errors=[
                {"pointer": f"/events/{i}/item_id", "detail": "unknown item"}
                for i, e in enumerate(events)
                if e["item_id"] in missing
            ][: openapi.MAX_ERRORS],
        )
    metrics = rt.metrics
    if result.accepted:  # each increment is a locked write to a shared file: skip zeros
        metrics.outbox_rows.inc(result.accepted)
        metrics.events.labels("accepted").inc(result.accepted)
    if len(events) > result.accepted:
        # Rare, and the body says which: an id another client recorded is "taken".
        taken = result.body.count(b'"status":"taken"') if result.body else 0
        if taken:
            metrics.events.labels("taken").inc(taken)
        if len(events) - result.accepted - taken:
            metrics.events.labels("duplicate").inc(len(events) - result.accepted - taken)
    metrics.idempotency.labels("first").inc()
    return Response(result.body, status=202, mimetype="application/json")


def _cap_events_per_user(rt, events: list[dict]) -> None:
    """429 before any database work when a batch would push a user past its event rate.

    Bulk events for one user_id skew its features and, through popularity, everyone's
    (recommendation poisoning, OWASP API6); the whole batch is refused or none of it.
    """
    bucket = rt.user_events
    if bucket.off:
        return
    costs = collections.Counter(e["user_id"] for e in events)
    if bucket.take(costs):
        return
    raise shed(
        rt,
        "user_event_rate",
        "user-event-rate",
        "too many events for one user_id",
        bucket.wait_s(costs),
    )


# RFC 3339 allows offsets up to ±23:59; PostgreSQL's timestamptz input stops at ±15:59.
PG_MAX_OFFSET = dt.timedelta(hours=15, minutes=59)


def _normalise_ids(body: dict, max_future_s: float) -> None:
    """Canonical ids, integers and timestamps: what the database and the consumer accept."""
    # The feature tables keep the latest occurred_at (GREATEST): one far-future event would
    # pin it for good, so events ahead of this service's clock beyond a skew are refused.
    latest = wallclock.now() + max_future_s
    future = []
    for index, event in enumerate(body["events"]):
        event["event_id"] = str(uuid.UUID(event["event_id"]))
        # JSON Schema counts 17.0 as an integer; the consumer (rightly) insists on an int.
        event["item_id"] = int(event["item_id"])
        event["occurred_at"], seconds = _canonical_time(event["occurred_at"], index)
        if seconds > latest:
            future.append(index)
    if future:
        raise ApiProblem(
            422,
            "event-in-future",
            f"occurred_at is more than {max_future_s:g} s ahead of the service clock",
            errors=[
                {"pointer": f"/events/{i}/occurred_at", "detail": "in the future"}
                for i in future[: openapi.MAX_ERRORS]
            ],
        )


def _canonical_time(text: str, index: int) -> tuple[str, float]:
    """ISO 8601 as Python writes it (RFC 3339 also allows 't', 'z' and offsets PG refuses)."""
    text = text.upper()
    if text[17:19] == "60":
        # A leap second (the schema admits only 23:59:60 UTC): Python has no second 60, so
        # it becomes the last microsecond before it, keeping the events' order.
        text = text[:17] + "59.999999" + text[19:].lstrip(".0123456789")
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        seconds = moment.timestamp()  # POSIX time; never overflows for an aware datetime
        offset = moment.utcoffset()
        if offset is not None and abs(offset) > PG_MAX_OFFSET:
            moment = moment.astimezone(dt.UTC)
        return moment.isoformat(), seconds
    except (ValueError, OverflowError):
        raise ApiProblem(
            422,
            "validation-error",
            "the body does not match the schema",
            errors=[{"pointer": f"/events/{index}/occurred_at", "detail": "out of range"}],
        ) from None


def _replay(stored: events_repo.Accepted, fingerprint: str) -> Response:
    rt = runtime()
    if stored.fingerprint != fingerprint:
        rt.metrics.idempotency.labels("mismatch").inc()
        raise ApiProblem(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was used with a different request body",
        )
    rt.metrics.idempotency.labels("replayed").inc()
    return Response(
        stored.body,
        status=stored.status,
        mimetype="application/json",
        headers={idempotency.REPLAYED_HEADER: "true"},
    )


@blueprint.get("/v1/events/<event_id>")
def get_event(event_id: str) -> Response:
    """Report whether an event of this client is accepted, published or applied."""
    client = client_id()
    # The document's format: uuid is the hyphenated 8-4-4-4-12 form; uuid.UUID alone would
    # also take hex without hyphens, braces and urn:uuid: spellings the contract excludes.
    openapi.validate(event_id, EVENT_ID, "path parameter event_id", 400, "/event_id")
    canonical = str(uuid.UUID(event_id))
    rt = runtime()
    budget = rt.settings.read_deadline_ms / 1000
    with rt.db.unit_of_work(budget, autocommit=True) as uow, uow.cursor() as cur:
        status = events_repo.event_status(cur, client, canonical)  # one statement, one trip
    if status is None:
        raise ApiProblem(404, "not-found", "no such event for this API key")
    return json_response(status)
