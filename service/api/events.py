"""POST /v1/events (idempotent, transactional outbox) and GET /v1/events/{event_id}."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
from flask import Blueprint, Response, g, request

from service import idempotency, openapi, strict_json
from service.api.common import client_id, json_response, runtime
from service.db import events as events_repo
from service.db import idempotency as idem_repo
from service.events import InteractionRecorded
from service.problems import ApiProblem

blueprint = Blueprint("events", __name__)

EVENT_HREF = "/v1/events/{}"


def _read_body() -> dict:
    """Parse the JSON body strictly and validate it against the EventBatch schema."""
    if request.mimetype != "application/json":
        raise ApiProblem(415, "unsupported-media-type", "send the body as application/json")
    raw = request.get_data(cache=False)
    try:
        body = strict_json.loads(raw)
    except strict_json.JsonRejected as exc:
        raise ApiProblem(400, "malformed-json", str(exc)) from None
    openapi.validate(body, "components/schemas/EventBatch")
    return body


@blueprint.post("/v1/events")
def post_events() -> Response:
    """Commit new events, their outbox rows and the idempotency record in one transaction."""
    client = client_id()
    key = idempotency.parse_key(request.headers.getlist(idempotency.HEADER))
    body = _read_body()
    events = body["events"]
    fingerprint = idempotency.fingerprint(request.method, request.path, body)
    _normalise_ids(body)
    rt = runtime()
    with rt.db.unit_of_work(rt.settings.write_deadline_ms / 1000) as uow, uow.cursor() as cur:
        if not idem_repo.try_lock(cur, idempotency.lock_key(client, key)):
            rt.metrics.idempotency.labels("in_flight").inc()
            raise ApiProblem(
                409,
                "idempotency-key-in-flight",
                "a request with this Idempotency-Key is still being processed",
                headers={"Retry-After": "1"},
            )
        stored = idem_repo.find(cur, client, key)
        if stored is not None:
            return _replay(stored, fingerprint)
        missing = events_repo.missing_items(cur, [e["item_id"] for e in events])
        if missing:
            raise ApiProblem(
                422,
                "unknown-item",
                "events refer to items not in the catalogue",
                errors=[
                    {"pointer": f"/events/{i}/item_id", "detail": "unknown item"}
                    for i, e in enumerate(events)
                    if e["item_id"] in missing
                ],
            )
        new_ids = events_repo.insert_events(cur, client, g.request_id, events)
        rows: list[tuple[str, str, bytes]] = []
        for event in events:
            if event["event_id"] in new_ids and event["event_id"] not in {r[0] for r in rows}:
                message = InteractionRecorded(
                    event_id=event["event_id"],
                    client_id=client,
                    user_id=event["user_id"],
                    item_id=event["item_id"],
                    kind=event["kind"],
                    occurred_at=event["occurred_at"],
                )
                rows.append((message.event_id, message.routing_key, message.to_payload()))
        events_repo.insert_outbox(
            cur,
            InteractionRecorded.TYPE,
            rows,
            {
                "request_id": g.request_id,
                "correlation_id": g.correlation_id,
                "event_version": InteractionRecorded.VERSION,
            },
        )
        response_body = orjson.dumps(_result(events, new_ids))
        idem_repo.store(
            cur, client, key, fingerprint, 202, response_body, rt.settings.idempotency_ttl_s
        )
        uow.commit()
    rt.metrics.outbox_rows.inc(len(rows))
    rt.metrics.events.labels("accepted").inc(len(rows))
    rt.metrics.events.labels("duplicate").inc(len(events) - len(rows))
    rt.metrics.idempotency.labels("first").inc()
    return Response(response_body, status=202, mimetype="application/json")


# RFC 3339 allows offsets up to ±23:59; PostgreSQL's timestamptz input stops at ±15:59.
PG_MAX_OFFSET = dt.timedelta(hours=15, minutes=59)


def _normalise_ids(body: dict) -> None:
    """Canonical ids, integers and timestamps: what the database and the consumer accept."""
    for index, event in enumerate(body["events"]):
        event["event_id"] = str(uuid.UUID(event["event_id"]))
        # JSON Schema counts 17.0 as an integer; the consumer (rightly) insists on an int.
        event["item_id"] = int(event["item_id"])
        event["occurred_at"] = _canonical_time(event["occurred_at"], index)


def _canonical_time(text: str, index: int) -> str:
    """ISO 8601 as Python writes it (RFC 3339 also allows 't', 'z' and offsets PG refuses)."""
    try:
        moment = dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        offset = moment.utcoffset()
        if offset is not None and abs(offset) > PG_MAX_OFFSET:
            moment = moment.astimezone(dt.UTC)
        return moment.isoformat()
    except (ValueError, OverflowError):
        raise ApiProblem(
            422,
            "validation-error",
            "the body does not match the schema",
            errors=[{"pointer": f"/events/{index}/occurred_at", "detail": "out of range"}],
        ) from None


def _result(events: list[dict], new_ids: set[str]) -> dict:
    seen: set[str] = set()
    results = []
    for event in events:
        event_id = event["event_id"]
        status = "accepted" if event_id in new_ids and event_id not in seen else "duplicate"
        seen.add(event_id)
        results.append(
            {"event_id": event_id, "status": status, "href": EVENT_HREF.format(event_id)}
        )
    accepted = sum(1 for r in results if r["status"] == "accepted")
    return {"accepted": accepted, "duplicates": len(results) - accepted, "results": results}


def _replay(stored: tuple[str, int, bytes], fingerprint: str) -> Response:
    rt = runtime()
    stored_fingerprint, status, body = stored
    if stored_fingerprint != fingerprint:
        rt.metrics.idempotency.labels("mismatch").inc()
        raise ApiProblem(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was used with a different request body",
        )
    rt.metrics.idempotency.labels("replayed").inc()
    return Response(
        body,
        status=status,
        mimetype="application/json",
        headers={idempotency.REPLAYED_HEADER: "true"},
    )


@blueprint.get("/v1/events/<event_id>")
def get_event(event_id: str) -> Response:
    """Report whether an event of this client is accepted, published or applied."""
    client = client_id()
    try:
        canonical = str(uuid.UUID(event_id))
    except ValueError:
        raise ApiProblem(
            400,
            "invalid-parameter",
            "event_id must be a UUID",
            errors=[{"pointer": "/event_id", "detail": "not a UUID"}],
        ) from None
    rt = runtime()
    with rt.db.unit_of_work(rt.settings.read_deadline_ms / 1000) as uow, uow.cursor() as cur:
        status = events_repo.event_status(cur, client, canonical)
    if status is None:
        raise ApiProblem(404, "not-found", "no such event for this API key")
    return json_response(status)
