"""The API on a slow or flaky database link: round trips fit the deadlines, probes shed nothing.

A one-way latency toxic on the database link makes every round trip cost that much, so
counting what fits in a deadline counts round trips: a request that needs one more than it
should fails outright instead of only running slower.
"""

from __future__ import annotations

import dataclasses
import time

import orjson
import psycopg2.extensions
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.service import event_batch, idem_key
from harness.pytest_plugins.workers import wait_until
from service.app import create_app
from service.db import deadline

fault_proxy = plugin.fault_proxy
refused_port = plugin.refused_port


@pytest.fixture(autouse=True)
def deadlines():
    """Bound every database wait by the request's deadline, as the serving process does."""
    deadline.install()
    yield
    psycopg2.extensions.set_wait_callback(None)


@pytest.fixture
def slow_link(app_settings, pg_instance, fault_proxy):
    """An app factory whose database link goes through the fault proxy ("api_db")."""
    created = fault_proxy.create_proxy("api_db", f"{pg_instance.host}:{pg_instance.port}")
    port = created["listen"].rsplit(":", 1)[1]
    url = app_settings.database_url.replace(f":{pg_instance.port}/", f":{port}/")
    apps = []

    def make(**changes):
        app = create_app(dataclasses.replace(app_settings, database_url=url, **changes))
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["reco"].db.pool.close()


def _latency(fault_proxy, ms: int) -> None:
    fault_proxy.add_toxic("api_db", "latency", stream="downstream", latency=ms)


def _sample(client, name: str, labels: dict | None = None) -> float:
    """One sample of the app's /metrics, 0 when absent."""
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels or {}):
                return sample.value
    return 0.0


def test_readiness_takes_one_round_trip_and_its_failures_never_open_the_breaker(
    slow_link, fault_proxy, auth
):
    client = slow_link(breaker_failure_threshold=2)
    _latency(fault_proxy, 200)  # the probe's budget is 0.5 s: BEGIN, SELECT, ROLLBACK won't fit
    for _ in range(3):
        resp = client.get("/readyz")
        assert resp.status_code == 200, resp.get_json()
    fault_proxy.update_toxic("api_db", "latency_downstream", latency=700)
    for _ in range(3):
        assert client.get("/readyz").status_code == 503
    # Requests have a longer budget than the probe: failing probes must not shed them.
    assert client.application.extensions["reco"].db.breaker.state == "closed"
    assert _sample(client, "reco_db_circuit_open") == 0


def test_cold_requests_fit_their_deadlines_on_a_slow_database(slow_link, fault_proxy, auth):
    """Connect, PREPARE with its first use, COMMIT: nothing else crosses the slow link."""
    _latency(fault_proxy, 200)
    reads = slow_link()  # 0.8 s: connect, the popular pool, the history (prepared with it)
    resp = reads.get("/v1/users/u-1/recommendations", headers=auth)
    assert resp.status_code == 200, resp.get_json()
    fault_proxy.update_toxic("api_db", "latency_downstream", latency=400)
    writes = slow_link()  # 1.5 s: connect, the write (prepared with it), COMMIT
    body = event_batch(1)
    resp = writes.post(
        "/v1/events",
        data=orjson.dumps(body),
        content_type="application/json",
        headers={**auth, "Idempotency-Key": idem_key()},
    )
    assert resp.status_code == 202, resp.get_json()
    fault_proxy.update_toxic("api_db", "latency_downstream", latency=300)
    event_id = body["events"][0]["event_id"]
    resp = writes.get(f"/v1/events/{event_id}", headers=auth)  # 0.8 s: one statement
    assert resp.status_code == 200, resp.get_json()
    # Waiting for a pooled connection and opening one are told apart.
    assert _sample(writes, "reco_db_connect_seconds_count") == 1
    assert _sample(writes, "reco_db_connect_seconds_sum") >= 0.4
    assert _sample(writes, "reco_db_pool_wait_seconds_sum") < 0.05


def test_a_pooled_connection_the_server_closed_is_replaced_not_handed_out(client, auth, db):
    assert client.get("/v1/users/u-1/recommendations", headers=auth).status_code == 200
    with db.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'reco-api' AND datname = current_database()"
        )
        assert cur.fetchall() == [(True,)]
    db.commit()
    wait_until(lambda: not _api_backends(db), 5, "the terminated backend to go")
    resp = client.get("/v1/users/u-1/recommendations", headers=auth)
    assert resp.status_code == 200, resp.get_json()
    assert client.application.extensions["reco"].db.breaker.state == "closed"


def _api_backends(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'reco-api' AND datname = current_database()"
        )
        rows = cur.fetchall()
    db.commit()
    return rows


def test_the_open_gauge_falls_back_once_the_breaker_lets_a_trial_through(
    app_settings, auth, refused_port
):
    settings = dataclasses.replace(
        app_settings,
        database_url=f"postgresql://reco@127.0.0.1:{refused_port}/reco",
        breaker_failure_threshold=1,
        breaker_reset_s=0.5,
    )
    app = create_app(settings)
    client = app.test_client()
    try:
        assert client.get("/v1/users/u-1/recommendations", headers=auth).status_code == 503
        assert _sample(client, "reco_db_circuit_open") == 1
        opened = time.monotonic()
        # No request reaches the worker: the gauge still follows the breaker's clock.
        wait_until(lambda: _sample(client, "reco_db_circuit_open") == 0, 5, "the gauge to clear")
        assert time.monotonic() - opened >= 0.4
        assert client.get("/v1/users/u-1/recommendations", headers=auth).status_code == 503
        assert _sample(client, "reco_db_circuit_open") == 1  # the failed trial opened it again
    finally:
        app.extensions["reco"].db.pool.close()
