"""Helpers for raw-socket HTTP tests: a POST's head, its body, chunked framing, rows left."""

from __future__ import annotations

import orjson

from harness.pytest_plugins.service import API_KEY, event_batch, idem_key
from harness.pytest_plugins.workers import scalar


def post_head(port: int, framing: list[str], request_id: str = "") -> bytes:
    """The request line and headers of an authenticated POST /v1/events, with ``framing``."""
    lines = [
        "POST /v1/events HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"X-API-Key: {API_KEY}",
        f"Idempotency-Key: {idem_key()}",
        "Content-Type: application/json",
        *([f"X-Request-ID: {request_id}"] if request_id else []),
        *framing,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def padded_batch(padding: int = 0) -> bytes:
    """A valid one-event body, with ``padding`` spaces before its closing brace."""
    return orjson.dumps(event_batch())[:-1] + b" " * padding + b"}"


def chunked(body: bytes, size: int = 65_536) -> bytes:
    """Frame ``body`` with chunked transfer coding, ``size`` bytes per chunk."""
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def written_rows(database_url: str) -> int:
    """Rows an accepted write leaves: events, outbox rows and idempotency records together."""
    return scalar(
        database_url,
        "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM outbox)"
        " + (SELECT count(*) FROM idempotency_keys)",
    )
