"""Bare Flask baselines (B1 hello, B2 single query, B2w insert + commit) for ratio benchmarks.

Served by gunicorn with the service's own config, so a ratio isolates what the service adds.
``observed_app()`` builds the same app with the service's access line and request series
(and /metrics) around it: the performance method keeps logging and metrics identical in
baseline and service, so the gated ratios use it; ``app`` has neither and gives the
informational ratios.
"""

from __future__ import annotations

import functools
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable

import orjson
import psycopg2
from flask import Flask, Response, request

SETUP = """
CREATE TABLE IF NOT EXISTS bench_kv (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO bench_kv SELECT g, md5(g::text) FROM generate_series(1, 10000) g
ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS bench_writes (
    event_id uuid PRIMARY KEY, user_id text NOT NULL, item_id bigint NOT NULL,
    kind text NOT NULL, occurred_at timestamptz NOT NULL
);
"""
SELECT_ONE = "SELECT v FROM bench_kv WHERE id = %s"
INSERT_ONE = (
    "INSERT INTO bench_writes (event_id, user_id, item_id, kind, occurred_at)"
    " VALUES (%s, %s, %s, %s, %s)"
)

app = Flask(__name__)
observed = Flask(__name__ + ".observed")
_conn = None
_pid = 0


def _db():
    """One connection per worker process, opened after fork."""
    global _conn, _pid
    if _conn is None or _pid != os.getpid():
        _conn = psycopg2.connect(os.environ["RECO_DATABASE_URL"], connect_timeout=5)
        _pid = os.getpid()
    return _conn


def _route(rule: str, **options) -> Callable[[Callable], Callable]:
    """Register a view on both apps."""

    def register(view: Callable) -> Callable:
        for flask_app in (app, observed):
            flask_app.route(rule, **options)(view)
        return view

    return register


@_route("/healthz", methods=["GET"])
@_route("/hello", methods=["GET"])
def hello() -> Response:
    """B1: no I/O at all."""
    return Response(orjson.dumps({"ok": 1}), mimetype="application/json")


@_route("/db", methods=["GET"])
def single_query() -> Response:
    """B2: one indexed SELECT on the per-worker connection."""
    conn = _db()
    with conn.cursor() as cur:
        cur.execute(SELECT_ONE, (random.randint(1, 10000),))  # noqa: S311 - benchmark key
        row = cur.fetchone()
    conn.rollback()
    return Response(orjson.dumps({"v": row[0]}), mimetype="application/json")


@_route("/write", methods=["POST"])
def insert_commit() -> Response:
    """B2w: parse the same JSON body as POST /v1/events, insert one row, commit."""
    event = orjson.loads(request.get_data())["events"][0]
    conn = _db()
    with conn.cursor() as cur:
        cur.execute(
            INSERT_ONE,
            (
                event.get("event_id") or str(uuid.uuid4()),
                event["user_id"],
                event["item_id"],
                event["kind"],
                event["occurred_at"],
            ),
        )
    conn.commit()
    return Response(orjson.dumps({"accepted": 1}), status=202, mimetype="application/json")


def setup_database(url: str) -> None:
    """Create and fill the baseline tables."""
    conn = psycopg2.connect(url, connect_timeout=5)
    with conn, conn.cursor() as cur:
        cur.execute(SETUP)
    conn.close()


@functools.cache
def observed_app() -> Flask:
    """The bare routes in the service's JSON access line and request series (gunicorn factory)."""
    from service import logs, metrics
    from service.middleware import NO_IDS, ROUTE_KEY, record_request
    from service.settings import Settings

    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_batch_lines, settings.log_batch_flush_ms)
    series = metrics.install(observed)
    inner = observed.wsgi_app

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        environ[ROUTE_KEY] = environ.get("PATH_INFO", "")  # static routes: the path is the rule

        def start(status: str, headers: list, exc_info=None):
            record_request(series, environ, status, time.perf_counter() - started, NO_IDS)
            return start_response(status, headers, exc_info)

        return inner(environ, start)

    observed.wsgi_app = wsgi  # type: ignore[method-assign]
    return observed
