"""Bare Flask baselines (B1 hello, B2 single query, B2w insert + commit) for ratio benchmarks.

Served by gunicorn with the service's own config, so a ratio isolates what the service adds.
"""

from __future__ import annotations

import os
import random
import uuid

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
_conn = None
_pid = 0


def _db():
    """One connection per worker process, opened after fork."""
    global _conn, _pid
    if _conn is None or _pid != os.getpid():
        _conn = psycopg2.connect(os.environ["RECO_DATABASE_URL"], connect_timeout=5)
        _pid = os.getpid()
    return _conn


@app.get("/healthz")
@app.get("/hello")
def hello() -> Response:
    """B1: no I/O at all."""
    return Response(orjson.dumps({"ok": 1}), mimetype="application/json")


@app.get("/db")
def single_query() -> Response:
    """B2: one indexed SELECT on the per-worker connection."""
    conn = _db()
    with conn.cursor() as cur:
        cur.execute(SELECT_ONE, (random.randint(1, 10000),))  # noqa: S311 - benchmark key
        row = cur.fetchone()
    conn.rollback()
    return Response(orjson.dumps({"v": row[0]}), mimetype="application/json")


@app.post("/write")
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
