"""Recommendations and readiness against the private PostgreSQL."""

from __future__ import annotations

import json
import logging

from harness.pytest_plugins.service import API_KEY


def _recs(client, auth, user="u-9", **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    resp = client.get(f"/v1/users/{user}/recommendations?{query}", headers=auth)
    assert resp.status_code == 200, resp.data
    return resp.json


def test_unknown_user_gets_popular_items(client, auth):
    body = _recs(client, auth, limit=5)
    assert body["fallback"] is True
    assert [i["item_id"] for i in body["items"]] == [1, 2, 3, 4, 5]
    assert {i["reason"] for i in body["items"]} == {"popular"}


def test_affinity_promotes_and_history_demotes(client, auth, db):
    with db.cursor() as cur:
        cur.execute("SELECT category_id FROM items WHERE item_id = 10")
        category = cur.fetchone()[0]
        cur.execute("INSERT INTO user_category_affinity VALUES ('u-9', %s, 5)", (category,))
        cur.execute("INSERT INTO user_item_interactions VALUES ('u-9', 1, 3, now())")
    body = _recs(client, auth, limit=100)
    assert body["fallback"] is False
    order = [i["item_id"] for i in body["items"]]
    reasons = {i["item_id"]: i["reason"] for i in body["items"]}
    assert order[0] == 10 and reasons[10] == "affinity"
    assert 1 not in order[:10]  # the most popular item, already seen, is demoted
    assert all(reasons[i] == "seen" for i in order if i == 1)
    assert len(order) == 100


def test_reads_have_no_side_effects(client, auth, db):
    def snapshot():
        with db.cursor() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox),"
                " (SELECT sum(score) FROM item_popularity)"
            )
            return cur.fetchone()

    before = snapshot()
    _recs(client, auth)
    assert snapshot() == before


def test_readiness_checks_migrations_at_head(client, db):
    assert client.get("/readyz").status_code == 200
    with db.cursor() as cur:
        cur.execute(
            "DELETE FROM schema_migrations WHERE version = "
            "(SELECT max(version) FROM schema_migrations)"
        )
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert "1 of the code's" in resp.get_json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_readiness_accepts_a_schema_ahead_of_the_code(client, db):
    # After a rollback the code is older than the schema (expand/contract keeps them compatible).
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO schema_migrations (version, filename, sha256)"
            " SELECT max(version) + 1, 'from-a-newer-release.sql', 'x'"
            " FROM schema_migrations"
        )
    resp = client.get("/readyz")
    assert resp.status_code == 200
    with db.cursor() as cur:
        cur.execute("SELECT max(version) FROM schema_migrations")
        assert resp.get_json()["checks"]["schema_version"] == cur.fetchone()[0]


def test_logs_never_contain_the_api_key(client, auth, caplog, make_events, capfd):
    logging.getLogger("reco").addHandler(caplog.handler)
    try:
        client.post("/v1/events", json=make_events(1), headers={**auth, "Idempotency-Key": '"k1"'})
        client.get("/v1/users/u-1/recommendations", headers={"X-API-Key": API_KEY + "x"})
    finally:
        logging.getLogger("reco").removeHandler(caplog.handler)
    for handler in logging.getLogger("reco").handlers:
        handler.flush()  # lines may wait in the batching handler
    out, err = capfd.readouterr()
    text = out + err + caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "request" in text
    assert API_KEY not in text


def test_a_forged_log_line_in_the_path_stays_inside_one_json_line(client, auth, caplog):
    """Log injection: CR/LF in a path cannot start a line of its own."""
    reco = logging.getLogger("reco")
    formatter = reco.handlers[0].formatter  # the JSON formatter every line goes through
    reco.addHandler(caplog.handler)
    try:
        path = "/v1/users/u%0d%0a%7b%22forged%22:1%7d/recommendations"
        assert client.get(path, headers=auth).status_code == 400
    finally:
        reco.removeHandler(caplog.handler)
    lines = [formatter.format(r) for r in caplog.records if r.name == "reco.http"]
    assert lines and all("\n" not in line and "\r" not in line for line in lines)
    assert json.loads(lines[-1])["path"] == '/v1/users/u\r\n{"forged":1}/recommendations'


def test_metrics_expose_service_series(client, auth):
    _recs(client, auth)
    text = client.get("/metrics").get_data(as_text=True)
    for series in (
        "flask_http_request_duration_seconds_bucket",
        "reco_http_inflight_requests",
        "reco_db_pool_wait_seconds",
        "reco_db_circuit_open",
    ):
        assert series in text
    assert 'path="/v1/users/<user_id>/recommendations"' in text


def test_requests_queued_too_long_are_shed_before_any_work(client, auth):
    import time

    stale = f"t={time.time() - 5:.3f}"
    resp = client.get("/v1/users/u-1/recommendations", headers={**auth, "X-Request-Start": stale})
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert resp.json["type"] == "/problems/overloaded"
    assert client.get("/healthz", headers={"X-Request-Start": stale}).status_code == 200
    fresh = f"t={time.time():.3f}"
    ok = client.get("/v1/users/u-1/recommendations", headers={**auth, "X-Request-Start": fresh})
    assert ok.status_code == 200
