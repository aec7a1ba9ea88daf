"""Every bad-input class gets a 4xx problem+json and leaves no row behind."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import uuid
from urllib.parse import unquote

import orjson
import pytest

from harness.pytest_plugins.service import OTHER_API_KEY, idem_key
from service.app import create_app

EVENT = {
    "event_id": "6f1c2c4e-8c2a-4e0e-9a53-0c6b1b7b2a10",
    "user_id": "u-1",
    "item_id": 7,
    "kind": "view",
    "occurred_at": "2026-11-29T10:00:00Z",
}


def _body(**overrides) -> bytes:
    return orjson.dumps({"events": [{**EVENT, **overrides}]})


def _raw_event(fragment: str) -> bytes:
    """An event batch whose user_id is a raw JSON fragment (to smuggle escapes past orjson)."""
    return (
        b'{"events":[{"event_id":"6f1c2c4e-8c2a-4e0e-9a53-0c6b1b7b2a10","user_id":'
        + fragment.encode()
        + b',"item_id":7,"kind":"view","occurred_at":"2026-11-29T10:00:00Z"}]}'
    )


BODY_CASES = {
    "malformed-json": (b'{"events": [', 400),
    "empty-body": (b"", 400),
    "invalid-utf8": (b'{"events": "\xff\xfe"}', 400),
    "byte-order-mark": ("\ufeff".encode() + _body(), 400),
    "nan": (_body().replace(b'"item_id":7', b'"item_id":NaN'), 400),
    "infinity": (_body().replace(b'"item_id":7', b'"item_id":Infinity'), 400),
    "duplicate-keys": (_body().replace(b'"kind":"view"', b'"kind":"view","kind":"click"'), 400),
    "lone-surrogate": (_raw_event('"\\ud800"'), 400),
    "nul-byte": (_raw_event('"a\\u0000b"'), 400),
    # Control characters that could forge a log line or a terminal escape: not an id.
    "escape-character": (_raw_event('"u-1\\u001b[31m"'), 422),
    "crlf-in-id": (_raw_event('"u-1\\r\\n{\\"forged\\": 1}"'), 422),
    "deep-nesting": (b'{"events":' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    "huge-integer": (_body().replace(b'"item_id":7', b'"item_id":' + b"9" * 5000), 400),
    "float-overflow": (_body().replace(b'"item_id":7', b'"item_id":1e999'), 400),
    "top-level-array": (b"[]", 422),
    "top-level-string": (b'"events"', 422),
    "extra-property": (orjson.dumps({"events": [EVENT], "is_admin": True}), 422),
    "event-extra-property": (_body(weight=100), 422),
    "no-events": (orjson.dumps({"events": []}), 422),
    "too-many-events": (orjson.dumps({"events": [EVENT] * 101}), 422),
    # Just under the byte limit: every item is an error, and only the count may be judged.
    "far-too-many-bad-events": (orjson.dumps({"events": [1] * 130_000}), 422),
    "bad-uuid": (_body(event_id="not-a-uuid"), 422),
    "user-id-too-long": (_body(user_id="u" * 129), 422),
    "user-id-bad-chars": (_body(user_id="u 1; DROP TABLE events"), 422),
    "user-id-empty": (_body(user_id=""), 422),
    "item-zero": (_body(item_id=0), 422),
    "item-negative": (_body(item_id=-5), 422),
    "item-float": (_body(item_id=7.5), 422),
    "item-string": (_body(item_id="7"), 422),
    "item-too-big": (_body(item_id=2**40), 422),
    "item-unknown": (_body(item_id=999_999), 422),
    "kind-unknown": (_body(kind="like"), 422),
    "occurred-at-bad": (_body(occurred_at="yesterday"), 422),
    "occurred-at-number": (_body(occurred_at=12345), 422),
    "missing-field": (
        orjson.dumps({"events": [{k: v for k, v in EVENT.items() if k != "kind"}]}),
        422,
    ),
    "null-event": (orjson.dumps({"events": [None]}), 422),
}


@contextlib.contextmanager
def _app_with(app_settings, **overrides):
    """The app built with some settings changed; its pool closed afterwards."""
    app = create_app(dataclasses.replace(app_settings, **overrides))
    try:
        yield app
    finally:
        app.extensions["reco"].db.pool.close()


def _assert_no_rows(db) -> None:
    with db.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM outbox)"
            " + (SELECT count(*) FROM idempotency_keys)"
        )
        assert cur.fetchone()[0] == 0


def _assert_problem(resp, status: int) -> None:
    assert resp.status_code == status, resp.data[:300]
    assert resp.mimetype == "application/problem+json"
    body = resp.json
    assert body["status"] == status and body["request_id"] and body["type"].startswith("/problems/")
    assert unquote(body["instance"]) == resp.request.path  # the occurrence: this request's path


@pytest.mark.parametrize("case", sorted(BODY_CASES))
def test_bad_body(client, auth, db, case):
    raw, status = BODY_CASES[case]
    resp = client.post(
        "/v1/events",
        data=raw,
        content_type="application/json",
        headers={**auth, "Idempotency-Key": idem_key()},
    )
    _assert_problem(resp, status)
    _assert_no_rows(db)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        None,
        "application/json; charset=utf-16",
        'application/json; charset="UTF-16LE"',
        "application/json; charset=iso-8859-1",
        'application/json; charset=""',
    ],
)
def test_wrong_content_type_is_415(client, auth, db, content_type):
    headers = {**auth, "Idempotency-Key": idem_key()}
    if content_type:
        headers["Content-Type"] = content_type
    resp = client.post("/v1/events", data=_body(), headers=headers)
    _assert_problem(resp, 415)
    _assert_no_rows(db)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP", "identity, gzip", ""])
def test_content_encoding_is_415(client, auth, db, encoding):
    """Bodies are never decompressed (no zip bombs): a coded body is refused, not misread."""
    headers = {**auth, "Idempotency-Key": idem_key(), "Content-Encoding": encoding}
    resp = client.post("/v1/events", data=_body(), content_type="application/json", headers=headers)
    _assert_problem(resp, 415)
    assert resp.headers["Accept-Encoding"] == "identity"
    _assert_no_rows(db)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json; charset=UTF-8"},
        {"Content-Type": "application/json;charset=utf-8", "Content-Encoding": "identity"},
        {"Content-Type": "application/json", "Content-Encoding": "Identity"},
    ],
)
def test_utf8_charset_and_identity_coding_are_accepted(client, auth, make_events, headers):
    resp = client.post(
        "/v1/events",
        data=orjson.dumps(make_events()),
        headers={**auth, "Idempotency-Key": idem_key(), **headers},
    )
    assert resp.status_code == 202, resp.data


def _in(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize(
    ("times", "pointers"),
    [
        ([_in(3600)], ["/events/0/occurred_at"]),
        (["2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z"], ["/events/1/occurred_at"]),
        (
            ["5000-01-01T00:00:00-19:00", "2026-01-01T00:00:00Z", "3000-01-01T00:00:00+15:00"],
            ["/events/0/occurred_at", "/events/2/occurred_at"],
        ),
    ],
)
def test_events_far_in_the_future_are_422(client, auth, db, make_events, times, pointers):
    """A far-future occurred_at would pin the features' latest interaction time for good."""
    body = make_events(len(times))
    for event, moment in zip(body["events"], times, strict=True):
        event["occurred_at"] = moment
    resp = client.post("/v1/events", json=body, headers={**auth, "Idempotency-Key": idem_key()})
    _assert_problem(resp, 422)
    assert resp.json["type"] == "/problems/event-in-future"
    assert [e["pointer"] for e in resp.json["errors"]] == pointers
    _assert_no_rows(db)


@pytest.mark.parametrize("moment", ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "+60"])
def test_past_events_and_small_clock_skew_are_accepted(client, auth, make_events, moment):
    body = make_events()
    body["events"][0]["occurred_at"] = _in(60) if moment == "+60" else moment
    resp = client.post("/v1/events", json=body, headers={**auth, "Idempotency-Key": idem_key()})
    assert resp.status_code == 202, resp.data


def test_auth_failures_are_throttled_per_address(app_settings, db, auth):
    """Past a burst of failed authentications an address gets 429; a valid key still works."""
    burst = 3
    with _app_with(app_settings, auth_failure_rate_per_s=0.001, auth_failure_burst=burst) as app:
        client = app.test_client()
        recs = "/v1/users/u-1/recommendations"
        bad = {"X-API-Key": "not-a-key"}
        for _ in range(burst):
            _assert_problem(client.get(recs, headers=bad), 401)
        resp = client.get(recs, headers=bad)
        _assert_problem(resp, 429)
        assert resp.headers["Retry-After"] == "1000"  # one token per 1/0.001 s
        _assert_problem(client.get(recs), 429)  # a missing key is a failure too
        post = client.post(
            "/v1/events",
            data=_body(),
            content_type="application/json",
            headers={**bad, "Idempotency-Key": idem_key()},
        )
        _assert_problem(post, 429)
        _assert_no_rows(db)
        # X-Forwarded-For is not trusted: a forged one does not buy a fresh bucket.
        spoofed = client.get(recs, headers={**bad, "X-Forwarded-For": "203.0.113.9"})
        _assert_problem(spoofed, 429)
        # Another peer address has its own bucket; valid keys never spend or meet the limit.
        other = client.get(recs, headers=bad, environ_base={"REMOTE_ADDR": "203.0.113.9"})
        _assert_problem(other, 401)
        assert client.get(recs, headers=auth).status_code == 200
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'reco_http_shed_total{reason="auth_failures"} 4.0' in metrics


def test_a_key_past_its_rate_gets_429_while_other_keys_go_on(app_settings, db, auth):
    """Rate limits: a burst above the key's limit is 429; others unaffected; it recovers."""
    now = [1000.0]
    with _app_with(app_settings, rate_limit_per_s=1.0, rate_limit_burst=3) as app:
        app.extensions["reco"].rate_limit._clock = lambda: now[0]  # the window passes on demand
        client = app.test_client()
        recs = "/v1/users/u-1/recommendations"
        for _ in range(3):
            assert client.get(recs, headers=auth).status_code == 200
        resp = client.get(recs, headers=auth)
        _assert_problem(resp, 429)
        assert resp.json["type"] == "/problems/rate-limited"
        assert int(resp.headers["Retry-After"]) >= 1
        post = client.post(
            "/v1/events",
            data=_body(),
            content_type="application/json",
            headers={**auth, "Idempotency-Key": idem_key()},
        )
        _assert_problem(post, 429)
        _assert_no_rows(db)
        assert client.get(recs, headers={"X-API-Key": OTHER_API_KEY}).status_code == 200
        now[0] += 1.0  # one token back
        assert client.get(recs, headers=auth).status_code == 200
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'reco_http_shed_total{reason="rate_limited"} 2.0' in metrics


def test_retry_after_of_a_rate_limit_covers_the_refill(app_settings, db, auth):
    """A client that waits as Retry-After says is served, also below one token a second."""
    now = [1000.0]
    with _app_with(app_settings, rate_limit_per_s=0.25, rate_limit_burst=1) as app:
        app.extensions["reco"].rate_limit._clock = lambda: now[0]
        client = app.test_client()
        recs = "/v1/users/u-1/recommendations"
        assert client.get(recs, headers=auth).status_code == 200
        resp = client.get(recs, headers=auth)
        _assert_problem(resp, 429)
        assert resp.headers["Retry-After"] == "4"  # one token per 4 s, not RECO_RETRY_AFTER_S
        now[0] += 4
        assert client.get(recs, headers=auth).status_code == 200

    settings = {"user_event_rate_per_s": 1.0, "user_event_burst": 100.0}
    with _app_with(app_settings, **settings) as app:
        app.extensions["reco"].user_events._clock = lambda: now[0]
        client = app.test_client()

        def post(n: int) -> object:
            events = [{**EVENT, "event_id": str(uuid.uuid4())} for _ in range(n)]
            return client.post(
                "/v1/events",
                data=orjson.dumps({"events": events}),
                content_type="application/json",
                headers={**auth, "Idempotency-Key": idem_key()},
            )

        assert post(100).status_code == 202
        resp = post(30)
        _assert_problem(resp, 429)
        assert resp.json["type"] == "/problems/user-event-rate"
        assert resp.headers["Retry-After"] == "30"  # 30 events for one user at 1 a second
        now[0] += 30
        assert post(30).status_code == 202


def test_events_past_a_users_rate_are_429_whole_and_other_users_go_on(app_settings, db, auth):
    """Shilling (OWASP API6): bulk events for one user are capped, from any key."""
    now = [1000.0]
    settings = {"user_event_rate_per_s": 1.0, "user_event_burst": 100.0}
    with _app_with(app_settings, **settings) as app:
        app.extensions["reco"].user_events._clock = lambda: now[0]
        client = app.test_client()

        def post(users: list[str], headers: dict) -> object:
            events = [{**EVENT, "event_id": str(uuid.uuid4()), "user_id": user} for user in users]
            return client.post(
                "/v1/events",
                data=orjson.dumps({"events": events}),
                content_type="application/json",
                headers={**headers, "Idempotency-Key": idem_key()},
            )

        assert post(["u-bulk"] * 99, auth).status_code == 202
        # One event left for u-bulk: a batch giving it two is refused whole, even though
        # u-other's event in it is within its own rate, and from another key too.
        other_key = {"X-API-Key": OTHER_API_KEY}
        for headers in (auth, other_key):
            resp = post(["u-other", "u-bulk", "u-bulk"], headers)
            _assert_problem(resp, 429)
            assert resp.json["type"] == "/problems/user-event-rate"
            assert int(resp.headers["Retry-After"]) >= 1
        with db.cursor() as cur:
            cur.execute("SELECT user_id, count(*) FROM events GROUP BY user_id")
            assert dict(cur.fetchall()) == {"u-bulk": 99}  # nothing of the refused batches
        assert post(["u-other"] * 100, other_key).status_code == 202  # other users go on
        now[0] += 2.0  # two tokens back
        assert post(["u-bulk", "u-bulk"], auth).status_code == 202
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'reco_http_shed_total{reason="user_event_rate"} 2.0' in metrics


def test_body_over_the_limit_is_413(client, auth, db):
    raw = b'{"events":[' + b" " * 300_000 + b"]}"
    resp = client.post(
        "/v1/events",
        data=raw,
        content_type="application/json",
        headers={**auth, "Idempotency-Key": idem_key()},
    )
    _assert_problem(resp, 413)
    _assert_no_rows(db)


def _post_streamed(client, auth, raw: bytes):
    """POST like a chunked upload: no Content-Length, the server ends the stream."""
    return client.post(
        "/v1/events",
        input_stream=io.BytesIO(raw),
        content_type="application/json",
        # werkzeug takes the body's length as unknown when the transfer coding is chunked.
        headers={**auth, "Idempotency-Key": idem_key(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_body_over_the_limit_is_413_not_read_in_part(client, auth, db):
    # A valid batch padded past the limit: read only up to the limit, it would be accepted.
    raw = _body()[:-1] + b" " * 300_000 + b"}"
    resp = _post_streamed(client, auth, raw)
    _assert_problem(resp, 413)
    _assert_no_rows(db)


def test_a_chunked_body_within_the_limit_is_accepted(client, auth, db):
    assert _post_streamed(client, auth, _body()).status_code == 202


@pytest.mark.parametrize(
    "key",
    [None, "", '""', '"' + "k" * 256 + '"', '"bad key with spaces"', '"x";y', "ké"],
)
def test_bad_idempotency_key_is_400(client, auth, db, key):
    headers = dict(auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    resp = client.post("/v1/events", data=_body(), content_type="application/json", headers=headers)
    _assert_problem(resp, 400)
    _assert_no_rows(db)


def test_two_idempotency_keys_are_400(client, auth, db):
    headers = [
        ("X-API-Key", auth["X-API-Key"]),
        ("Idempotency-Key", idem_key()),
        ("Idempotency-Key", idem_key()),
    ]
    resp = client.post("/v1/events", data=_body(), content_type="application/json", headers=headers)
    _assert_problem(resp, 400)
    _assert_no_rows(db)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=0", 400),
        ("limit=101", 400),
        ("limit=abc", 400),
        ("limit=-1", 400),
        ("limit=1.5", 400),
        ("limit=" + "9" * 5000, 400),
        ("surface=moon", 400),
        ("unknown=1", 400),
        ("limit=%00", 400),
        ("limit=", 400),
        ("limit", 400),
        ("surface=", 400),
        ("limit=1&limit=2", 400),
        ("limit=5&limit=5", 400),
        ("surface=home&surface=cart", 400),
    ],
)
def test_bad_query_is_400(client, auth, query, status):
    _assert_problem(client.get(f"/v1/users/u-1/recommendations?{query}", headers=auth), status)


@pytest.mark.parametrize(
    ("query", "pointers"),
    [
        ("limit=1&limit=2", ["/limit"]),
        ("surface=home&limit=3&surface=cart&limit=3", ["/limit", "/surface"]),
        (
            "&".join(f"p{i}=1" for i in range(30)),
            [f"/p{i}" for i in sorted(range(30), key=str)][:20],
        ),
    ],
)
def test_repeated_and_unknown_query_parameters_are_named(client, auth, query, pointers):
    resp = client.get(f"/v1/users/u-1/recommendations?{query}", headers=auth)
    _assert_problem(resp, 400)
    assert [e["pointer"] for e in resp.json["errors"]] == pointers


@pytest.mark.parametrize(
    ("url", "pointer"),
    [
        ("/v1/users/u-1/recommendations?limit=0", "/limit"),
        ("/v1/users/u-1/recommendations?surface=" + "s" * 65, "/surface"),
        ("/v1/users/u%201/recommendations", "/user_id"),
        ("/v1/events/123", "/event_id"),
    ],
)
def test_a_bad_parameter_is_named_by_its_pointer(client, auth, url, pointer):
    resp = client.get(url, headers=auth)
    _assert_problem(resp, 400)
    assert [e["pointer"] for e in resp.json["errors"]] == [pointer]


@pytest.mark.parametrize(
    "path", ["/v1//events", "//v1/events", "/v1/users/u-1//recommendations", "/v1/events//x"]
)
def test_a_doubled_slash_is_404_never_a_redirect(client, auth, db, path):
    # Werkzeug's default merges slashes with a 308 text/html redirect built from the Host
    # header; a POST there must not be redirected (or stored) either.
    for resp in (
        client.get(path, headers={**auth, "Host": "evil.example"}),
        client.post(path, data=_body(), headers=auth, content_type="application/json"),
    ):
        _assert_problem(resp, 404)
        assert "Location" not in resp.headers
    _assert_no_rows(db)


@pytest.mark.parametrize("user_id", ["u%201", "u" * 129, "%C3%A9", "a%00b", "..%2F..%2Fetc"])
def test_bad_user_id_is_4xx(client, auth, user_id):
    resp = client.get(f"/v1/users/{user_id}/recommendations", headers=auth)
    assert resp.status_code in (400, 404)
    assert resp.mimetype == "application/problem+json"


@pytest.mark.parametrize("event_id", ["123", "x" * 40, "%00"])
def test_bad_event_id_is_400(client, auth, event_id):
    _assert_problem(client.get(f"/v1/events/{event_id}", headers=auth), 400)


def test_unknown_event_is_404(client, auth):
    _assert_problem(client.get(f"/v1/events/{uuid.uuid4()}", headers=auth), 404)


def test_unknown_route_and_method(client, auth):
    _assert_problem(client.get("/v1/nope", headers=auth), 404)
    resp = client.delete("/v1/events", headers=auth)
    _assert_problem(resp, 405)
    assert resp.headers["Allow"] == "POST"
    assert client.options("/v1/events").status_code == 405


def test_errors_do_not_leak_internals(client, auth):
    resp = client.get("/v1/users/u-1/recommendations?limit=abc", headers=auth)
    text = resp.get_data(as_text=True).lower()
    assert "traceback" not in text and "psycopg2" not in text and "select" not in text
