"""The API under gunicorn: metrics across workers, readiness, graceful stop, black-holed DB."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
import requests

from harness.stack import PostgresServer, wait_until
from harness.tcpproxy import TcpProxy
from migrations.runner import up

AUTH = {"X-API-Key": "dev-key"}


def _post_events(base: str, n: int = 1, timeout: float = 10) -> requests.Response:
    body = {
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "user_id": "u-e2e",
                "item_id": 5 + i,
                "kind": "view",
                "occurred_at": "2026-11-29T10:00:00Z",
            }
            for i in range(n)
        ]
    }
    return requests.post(
        f"{base}/v1/events",
        json=body,
        timeout=timeout,
        headers={**AUTH, "Idempotency-Key": f'"{uuid.uuid4()}"'},
    )


def test_metrics_aggregate_across_workers(gunicorn_server, database_url):
    server = gunicorn_server(database_url, workers=2)
    url = f"{server.url}/v1/users/u-1/recommendations"

    def pids() -> set[int]:
        return {
            json.loads(line)["pid"]
            for line in server.log().splitlines()
            if line.startswith("{") and '"path":"/v1/users/u-1/recommendations"' in line
        }

    sent = 0
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        # Concurrent requests make both workers accept; bounded in case one never does.
        while sent < 400 and (sent < 40 or len(pids()) < 2):
            statuses = list(
                pool.map(
                    lambda _: requests.get(url, headers=AUTH, timeout=5).status_code, range(40)
                )
            )
            assert set(statuses) == {200}
            sent += 40
    deadline = time.monotonic() + 5  # access lines are written in batches (500 ms at most)
    while len(pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(pids()) == 2, "both workers should have served requests"
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    counts = [
        line
        for line in text.splitlines()
        if line.startswith("flask_http_request_duration_seconds_count")
        and "/recommendations" in line
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counts) == sent


@pytest.fixture
def own_postgres():
    """A PostgreSQL of its own, so this test can stop and restart it."""
    root = Path(tempfile.mkdtemp(prefix="reco-own-pg-"))
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must traverse it
    server = PostgresServer(root, test_mode=True)
    server.start()
    url = server.create_database("reco")
    up(url, log=lambda _m: None)
    yield server, url
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_readiness_follows_the_database(gunicorn_server, own_postgres):
    pg, url = own_postgres
    server = gunicorn_server(url, workers=2)
    ready = f"{server.url}/readyz"
    assert requests.get(ready, timeout=5).status_code == 200
    pg.stop()
    wait_until(lambda: requests.get(ready, timeout=5).status_code == 503, 10, "readiness 503")
    resp = requests.get(ready, timeout=5)
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.headers["Retry-After"]
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    pg.start()
    wait_until(lambda: requests.get(ready, timeout=5).status_code == 200, 15, "readiness 200")


def test_sigterm_under_load_loses_no_in_flight_request(gunicorn_server, database_url):
    """Requests a worker took are answered; only never-accepted ones may be reset (no effect)."""
    # The held request waits on a row lock across the SIGTERM: longer than the default 200 ms.
    server = gunicorn_server(database_url, workers=2, RECO_LOCK_TIMEOUT_MS="900")
    signalled = threading.Event()
    stop_at = time.monotonic() + 20
    outcomes: list[tuple[bool, bool, int | str, list[str]]] = []

    def client() -> None:
        while time.monotonic() < stop_at:
            started_before = not signalled.is_set()
            body = {
                "events": [
                    {
                        "event_id": str(uuid.uuid4()),
                        "user_id": "u-term",
                        "item_id": 5 + i,
                        "kind": "view",
                        "occurred_at": "2026-11-29T10:00:00Z",
                    }
                    for i in range(20)
                ]
            }
            ids = [e["event_id"] for e in body["events"]]
            try:
                status: int | str = requests.post(
                    f"{server.url}/v1/events",
                    json=body,
                    timeout=10,
                    headers={**AUTH, "Idempotency-Key": f'"{uuid.uuid4()}"'},
                ).status_code
            except requests.ConnectionError as exc:
                status = "refused" if "refused" in str(exc).lower() else "reset"
            outcomes.append((started_before, signalled.is_set(), status, ids))
            if status == "refused" or (signalled.is_set() and not started_before):
                return

    # One request certainly in a worker at the SIGTERM: its event id is inserted, uncommitted,
    # by another session, so the worker waits on that row until the session rolls back.
    held_id = str(uuid.uuid4())
    holder = psycopg2.connect(database_url, connect_timeout=5)
    watcher = psycopg2.connect(database_url, connect_timeout=5)
    watcher.autocommit = True

    def held_post() -> int:
        body = {"events": [{"event_id": held_id, "user_id": "u-held", "item_id": 5,
                            "kind": "view", "occurred_at": "2026-11-29T10:00:00Z"}]}  # fmt: skip
        return requests.post(
            f"{server.url}/v1/events",
            json=body,
            timeout=10,
            headers={**AUTH, "Idempotency-Key": f'"{uuid.uuid4()}"'},
        ).status_code

    def lock_waits() -> int:
        with watcher.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cur.fetchone()[0]

    try:
        with concurrent.futures.ThreadPoolExecutor(7) as pool:
            futures = [pool.submit(client) for _ in range(6)]
            wait_until(lambda: len(outcomes) > 30, 15, "load")
            with holder.cursor() as cur:
                cur.execute(
                    "INSERT INTO events (event_id, client_id, user_id, item_id, kind, occurred_at)"
                    " VALUES (%s, 'holder', 'u-held', 5, 'view', now())",
                    (held_id,),
                )
            held = pool.submit(held_post)
            wait_until(lambda: lock_waits() > 0, 0.7, "the held request waiting on the row")
            signalled.set()
            server.proc.send_signal(signal.SIGTERM)
            holder.rollback()  # the held request goes on, inside the stopping worker
            assert server.proc.wait(timeout=40) == 0
            assert held.result(timeout=30) == 202
            for future in futures:
                future.result(timeout=30)
    finally:
        holder.close()
        watcher.close()
    conn = psycopg2.connect(database_url, connect_timeout=5)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT event_id::text FROM events")
        stored = {row[0] for row in cur.fetchall()}
    conn.close()
    for _before, _after, status, ids in outcomes:
        if status == 202:
            assert set(ids) <= stored
        else:
            # Reset while queued in the listen backlog, before any worker read it: no effect.
            assert status in ("refused", "reset") and not set(ids) & stored, status
    assert held_id in stored  # answered 202 after the SIGTERM, and committed
    assert "WORKER TIMEOUT" not in server.log()


def test_black_holed_database_answers_503_within_the_deadline(
    gunicorn_server, pg_instance, database_url
):
    proxy = TcpProxy(pg_instance.host, pg_instance.port)
    proxied = database_url.replace(f":{pg_instance.port}/", f":{proxy.port}/")
    try:
        server = gunicorn_server(proxied, workers=2)
        assert _post_events(server.url).status_code == 202
        proxy.blackhole()
        durations = []
        for _ in range(12):
            started = time.monotonic()
            resp = requests.get(
                f"{server.url}/v1/users/u-1/recommendations", headers=AUTH, timeout=10
            )
            durations.append(time.monotonic() - started)
            assert resp.status_code == 503, resp.text
            assert resp.headers["Content-Type"] == "application/problem+json"
            assert int(resp.headers["Retry-After"]) >= 1
        assert max(durations) < 0.8 + 0.7  # read deadline plus scheduling margin
        write = _post_events(server.url)
        assert write.status_code == 503
        proxy.heal()
        wait_until(lambda: _post_events(server.url, timeout=5).status_code == 202, 20, "recovery")
        assert "WORKER TIMEOUT" not in server.log()
    finally:
        proxy.close()
    conn = psycopg2.connect(database_url, connect_timeout=5)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) = count(DISTINCT event_id) FROM outbox")
        assert cur.fetchone()[0]
    conn.close()
