"""POST/GET events against the private PostgreSQL: one transaction, idempotency, ownership."""

from __future__ import annotations

import concurrent.futures

import orjson
import psycopg2.extensions
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.pytest_plugins.service import OTHER_API_KEY, idem_key
from service.db import deadline


def _counts(db) -> tuple[int, int, int]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox),"
            " (SELECT count(*) FROM idempotency_keys)"
        )
        return cur.fetchone()


def _install(db, sql: str) -> None:
    """Create a function and a trigger on the test's own database, committed."""
    with db.cursor() as cur:
        cur.execute(sql)
    db.commit()


def _events_counted(client) -> dict[str, float]:
    """reco_events_total by result, from /metrics."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        s.labels["result"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "reco_events_total"
    }


def _post(client, auth, body, key=None, **headers):
    return client.post(
        "/v1/events",
        data=orjson.dumps(body),
        content_type="application/json",
        headers={**auth, "Idempotency-Key": key or idem_key(), **headers},
    )


def test_events_outbox_and_key_commit_together(client, auth, db, make_events):
    body = make_events(3)
    resp = _post(client, auth, body, **{"X-Request-ID": "req-123"})
    assert resp.status_code == 202, resp.json
    assert resp.json["accepted"] == 3 and resp.json["duplicates"] == 0
    assert _counts(db) == (3, 3, 1)
    with db.cursor() as cur:
        cur.execute("SELECT headers->>'request_id', event_type, routing_key FROM outbox LIMIT 1")
        assert cur.fetchone() == ("req-123", "interaction.recorded", "interaction.recorded.click")


def test_failure_before_commit_leaves_nothing(client, auth, db, make_events):
    # The idempotency record is the last write: failing it must take events and outbox along.
    _install(
        db,
        "CREATE FUNCTION explode() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'crash after the outbox insert'; END $$;"
        " CREATE TRIGGER explode BEFORE INSERT ON idempotency_keys"
        " FOR EACH ROW EXECUTE FUNCTION explode()",
    )
    resp = _post(client, auth, make_events(2))
    assert resp.status_code == 500
    assert resp.mimetype == "application/problem+json"
    assert _counts(db) == (0, 0, 0)


def test_a_commit_without_an_answer_is_504_outcome_unknown(client, auth, db, make_events):
    # A deferred trigger makes COMMIT itself outlast the write deadline: the request
    # cannot know whether it committed, so it must not answer 503 ("nothing committed").
    _install(
        db,
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;"
        " CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON idempotency_keys"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
    )
    deadline.install()  # as the serving process does (service/wsgi.py)
    try:
        resp = _post(client, auth, make_events(1))
    finally:
        psycopg2.extensions.set_wait_callback(None)
    assert resp.status_code == 504, resp.json
    assert resp.json["type"] == "/problems/outcome-unknown"
    assert resp.headers["Retry-After"]


def test_too_little_time_left_to_commit_is_503_with_nothing_written(client, auth, db, make_events):
    # The write's round trip takes most of the deadline (1.5 s): COMMIT would likely outlive
    # it, so the request gives up before sending it and can promise that nothing was written.
    _install(
        db,
        "CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(0.9); RETURN NEW; END $$;"
        " CREATE TRIGGER slow_write BEFORE INSERT ON idempotency_keys"
        " FOR EACH ROW EXECUTE FUNCTION slow_write()",
    )
    resp = _post(client, auth, make_events(1))
    assert resp.status_code == 503, resp.json
    assert resp.json["type"] == "/problems/database-unavailable"
    assert _counts(db) == (0, 0, 0)


def test_replay_returns_the_stored_response(client, auth, db, make_events):
    body, key = make_events(2), idem_key()
    first = _post(client, auth, body, key)
    second = _post(client, auth, body, key)
    assert first.status_code == second.status_code == 202
    assert first.data == second.data
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _counts(db) == (2, 2, 1)


def test_same_key_different_body_is_422(client, auth, db, make_events):
    key = idem_key()
    assert _post(client, auth, make_events(1), key).status_code == 202
    resp = _post(client, auth, make_events(1), key)
    assert resp.status_code == 422
    assert resp.json["type"] == "/problems/idempotency-key-reused"
    assert _counts(db) == (1, 1, 1)


def test_fifty_parallel_requests_with_one_key_have_one_effect(app, auth, db, make_events):
    body, key = make_events(5), idem_key()

    def send(_):
        return _post(app.test_client(), auth, body, key)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(50)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 409}, statuses
    originals = [
        r for r in responses if r.status_code == 202 and "Idempotent-Replayed" not in r.headers
    ]
    assert len(originals) == 1
    assert all(r.headers.get("Retry-After") for r in responses if r.status_code == 409)
    assert _counts(db) == (5, 5, 1)


def test_keys_are_scoped_per_client(client, auth, db, make_events):
    key = idem_key()
    assert _post(client, auth, make_events(1), key).status_code == 202
    other = _post(client, {"X-API-Key": OTHER_API_KEY}, make_events(1), key)
    assert other.status_code == 202 and "Idempotent-Replayed" not in other.headers
    assert _counts(db) == (2, 2, 2)


def test_expired_key_starts_a_new_operation(client, auth, db, make_events):
    body, key = make_events(1), idem_key()
    assert _post(client, auth, body, key).status_code == 202
    with db.cursor() as cur:
        cur.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    again = _post(client, auth, body, key)
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    assert again.json["duplicates"] == 1  # same event id: no second effect
    assert _counts(db) == (1, 1, 1)


def test_repeated_event_id_is_a_noop(client, auth, db, make_events):
    body = make_events(1)
    body["events"].append(dict(body["events"][0]))
    resp = _post(client, auth, body)
    assert resp.status_code == 202
    assert [r["status"] for r in resp.json["results"]] == ["accepted", "duplicate"]
    assert _counts(db) == (1, 1, 1)


def test_mixed_batch_results_and_outbox_rows_keep_request_order(client, auth, db, make_events):
    known = make_events(1)
    assert _post(client, auth, known).status_code == 202
    fresh = make_events(3)["events"]
    a, b, c = fresh
    batch = {"events": [b, known["events"][0], a, dict(b), c]}
    resp = _post(client, auth, batch)
    assert resp.status_code == 202
    statuses = [r["status"] for r in resp.json["results"]]
    assert statuses == ["accepted", "duplicate", "accepted", "duplicate", "accepted"]
    assert [r["event_id"] for r in resp.json["results"]] == [e["event_id"] for e in batch["events"]]
    assert resp.json["accepted"] == 3 and resp.json["duplicates"] == 2
    # The body is rendered by the database: compact JSON, as orjson would write it.
    assert resp.data == orjson.dumps(resp.json)
    with db.cursor() as cur:
        cur.execute("SELECT event_id::text FROM outbox ORDER BY id OFFSET 1")
        assert [r[0] for r in cur.fetchall()] == [b["event_id"], a["event_id"], c["event_id"]]
    assert _counts(db) == (4, 4, 2)


def test_an_id_another_client_recorded_is_taken_and_not_written(client, auth, db, make_events):
    mine = make_events(1)
    event_id = mine["events"][0]["event_id"]
    assert _post(client, auth, mine).status_code == 202
    other = {"X-API-Key": OTHER_API_KEY}
    theirs = make_events(1)
    theirs["events"][0]["event_id"] = event_id  # the same id, another client's event
    resp = _post(client, other, theirs)
    assert resp.status_code == 202
    # No href: GET answers 404 for another client's event, and this one was not recorded.
    assert resp.data == orjson.dumps(
        {"accepted": 0, "duplicates": 1, "results": [{"event_id": event_id, "status": "taken"}]}
    )
    assert client.get(f"/v1/events/{event_id}", headers=other).status_code == 404
    assert _counts(db) == (1, 1, 2)
    # The owner still reads its own repeat as a duplicate it can follow.
    again = _post(client, auth, mine)
    assert again.json["results"][0]["status"] == "duplicate"
    assert client.get(again.json["results"][0]["href"], headers=auth).status_code == 200


def test_a_batch_tells_taken_ids_from_duplicates(client, auth, db, make_events):
    known = make_events(1)["events"][0]
    assert _post(client, {"X-API-Key": OTHER_API_KEY}, {"events": [known]}).status_code == 202
    own = make_events(1)["events"][0]
    assert _post(client, auth, {"events": [own]}).status_code == 202
    fresh = make_events(1)["events"][0]
    batch, key = {"events": [fresh, known, dict(fresh), own, dict(known)]}, idem_key()
    resp = _post(client, auth, batch, key)
    assert resp.status_code == 202
    results = resp.json["results"]
    statuses = [r["status"] for r in results]
    assert statuses == ["accepted", "taken", "duplicate", "duplicate", "taken"]
    assert ["href" in r for r in results] == [True, False, True, True, False]
    assert resp.json["accepted"] == 1 and resp.json["duplicates"] == 4
    assert resp.data == orjson.dumps(resp.json)
    assert _counts(db) == (3, 3, 3)
    counted = _events_counted(client)
    assert counted == {"accepted": 3, "duplicate": 2, "taken": 2}
    # The replay is the same bytes.
    replay = _post(client, auth, batch, key)
    assert replay.data == resp.data and replay.headers["Idempotent-Replayed"] == "true"


def test_unknown_item_is_422_without_effect(client, auth, db, make_events):
    body = make_events(3)
    body["events"][1]["item_id"] = 987_654_321
    body["events"][2]["item_id"] = 987_654_320
    resp = _post(client, auth, body)
    assert resp.status_code == 422
    assert resp.json["type"].endswith("unknown-item")
    assert [e["pointer"] for e in resp.json["errors"]] == ["/events/1/item_id", "/events/2/item_id"]
    assert _counts(db) == (0, 0, 0)


def test_event_status_and_ownership(client, auth, db, make_events):
    body = make_events(1)
    event_id = body["events"][0]["event_id"]
    assert _post(client, auth, body).status_code == 202
    resp = client.get(f"/v1/events/{event_id}", headers=auth)
    assert resp.status_code == 200 and resp.json["status"] == "accepted"
    with db.cursor() as cur:
        cur.execute("UPDATE outbox SET published_at = now()")
    assert client.get(f"/v1/events/{event_id}", headers=auth).json["status"] == "published"
    with db.cursor() as cur:
        cur.execute("INSERT INTO inbox (consumer, event_id) VALUES ('features', %s)", (event_id,))
    assert client.get(f"/v1/events/{event_id}", headers=auth).json["status"] == "applied"
    assert (
        client.get(f"/v1/events/{event_id}", headers={"X-API-Key": OTHER_API_KEY}).status_code
        == 404
    )


@pytest.mark.parametrize("header", ["", "nope", "dev-key "])
def test_bad_api_key_is_401_without_effect(client, db, make_events, header):
    resp = _post(client, {"X-API-Key": header} if header else {}, make_events(1))
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("ApiKey")
    assert _counts(db) == (0, 0, 0)


def _rows(db, event_id: str) -> tuple:
    """What the write stored for one event, with its own id taken out."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT e.client_id, e.user_id, e.item_id, e.kind, e.occurred_at, o.event_type,"
            " o.routing_key, convert_from(o.payload, 'UTF8'), o.headers - 'request_id'"
            " - 'correlation_id', o.published_at, o.attempts"
            " FROM events e JOIN outbox o USING (event_id) WHERE e.event_id = %s",
            (event_id,),
        )
        row = cur.fetchone()
    return tuple(v.replace(event_id, "ID") if isinstance(v, str) else v for v in row)


def test_a_one_event_batch_writes_what_a_larger_batch_writes(client, auth, db, make_events):
    # One event takes the function's single-row path (0012); two take the batch statement.
    alone, pair = make_events(1), make_events(2)
    assert _post(client, auth, alone).status_code == 202
    assert _post(client, auth, pair).status_code == 202
    assert _rows(db, alone["events"][0]["event_id"]) == _rows(db, pair["events"][0]["event_id"])
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM idempotency_keys"
            " WHERE expires_at BETWEEN now() + interval '23 hours' AND now() + interval '25 hours'"
        )
        assert cur.fetchone()[0] == 2


@pytest.mark.parametrize("known", [False, True], ids=["accepted", "duplicate"])
def test_a_one_event_body_is_the_documented_result(client, auth, db, make_events, known):
    body = make_events(1)
    event_id = body["events"][0]["event_id"]
    if known:
        assert _post(client, auth, body).status_code == 202
    resp = _post(client, auth, body)
    status = "duplicate" if known else "accepted"
    assert resp.status_code == 202
    assert resp.data == orjson.dumps(
        {
            "accepted": 0 if known else 1,
            "duplicates": 1 if known else 0,
            "results": [{"event_id": event_id, "status": status, "href": f"/v1/events/{event_id}"}],
        }
    )
    assert _counts(db) == (1, 1, 2 if known else 1)


def test_one_unknown_item_is_422_without_effect(client, auth, db, make_events):
    body = make_events(1, item_id=987_654_321)
    resp = _post(client, auth, body)
    assert resp.status_code == 422
    assert [e["pointer"] for e in resp.json["errors"]] == ["/events/0/item_id"]
    assert _counts(db) == (0, 0, 0)
