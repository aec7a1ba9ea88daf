"""A GET carrying a body over the limit is refused under gunicorn, however the body is framed."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from harness.pytest_plugins.gunicorn import GunicornServer

LIMIT = 262_144  # RECO_MAX_CONTENT_LENGTH's default


@pytest.fixture
def server(database_url, tmp_path) -> Iterator[GunicornServer]:
    """The API under gunicorn (one worker), without a broker: these requests never need one."""
    env = {"RECO_ENV": "test", "RECO_DATABASE_URL": database_url, "RECO_LOG_LEVEL": "WARNING"}
    started = GunicornServer(env, workers=1, workdir=tmp_path / "gunicorn")
    try:
        yield started
    finally:
        started.stop()


def _get(port: int, body: bytes, streamed: bool) -> tuple[int, bytes]:
    """GET /healthz with ``body``, chunked when ``streamed`` (else with a Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        pieces = (body[i : i + 65_536] for i in range(0, len(body), 65_536))
        conn.request("GET", "/healthz", body=pieces if streamed else body, encode_chunked=streamed)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT + 100_000])
def test_a_chunked_get_body_over_the_limit_is_413_problem_json(server, size):
    status, answer = _get(server.port, b"x" * size, streamed=True)
    assert status == 413, answer
    assert json.loads(answer)["type"] == "/problems/content-too-large"


def test_a_get_body_over_the_limit_by_content_length_is_413(server):
    status, answer = _get(server.port, b"x" * (LIMIT + 1), streamed=False)
    assert status == 413, answer


def test_a_get_body_within_the_limit_is_ignored(server):
    assert _get(server.port, b"x" * LIMIT, streamed=True)[0] == 200
    assert _get(server.port, b"x" * LIMIT, streamed=False)[0] == 200
