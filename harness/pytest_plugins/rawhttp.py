"""Helpers for raw-socket HTTP tests: chunked framing and what a write left in the database."""

from __future__ import annotations

from harness.pytest_plugins.workers import scalar


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
