"""Bad framing that HTTP clients refuse to send, over raw sockets to gunicorn."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import time
import zlib

import pytest

from harness.pytest_plugins.rawhttp import chunked, padded_batch, post_head, written_rows
from service import openapi
from service.middleware import SECURITY_HEADERS

LIMIT = 262_144  # RECO_MAX_CONTENT_LENGTH's default


def _exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data``, read the answer until the server closes (sync workers always do)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before reading all of it: the answer is still there
        received = b""
        while chunk := sock.recv(65_536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def server(gunicorn_server, database_url):
    return gunicorn_server(database_url, workers=2)


def test_a_chunked_body_over_the_limit_is_413_problem_json(server, database_url):
    # A valid batch padded past the limit: judged by its first 256 KiB, it would be accepted.
    body = padded_batch(LIMIT + 50_000)
    status, headers, answer = _exchange(
        server.port, post_head(server.port, ["Transfer-Encoding: chunked"]) + chunked(body)
    )
    assert status == 413, answer
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(answer)["status"] == 413
    assert written_rows(database_url) == 0


def test_a_chunked_body_within_the_limit_is_accepted(server, database_url):
    status, _, answer = _exchange(
        server.port,
        post_head(server.port, ["Transfer-Encoding: chunked"]) + chunked(padded_batch(), size=16),
    )
    assert status == 202, answer
    assert written_rows(database_url) == 3  # the event, its outbox row, the idempotency record


@pytest.mark.parametrize(
    "framing",
    [
        ["Content-Length: 10", "Transfer-Encoding: chunked"],
        ["Transfer-Encoding: chunked, identity"],
        ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        ["Content-Length: 10", "Content-Length: 12"],
        ["Content-Length: +10"],
    ],
    ids=["cl-and-te", "chunked-identity", "duplicate-te", "duplicate-cl", "signed-cl"],
)
def test_ambiguous_framing_is_refused_before_the_app(server, database_url, framing):
    body = padded_batch()
    data = post_head(server.port, framing) + (chunked(body) if "chunked" in str(framing) else body)
    status, headers, answer = _exchange(server.port, data)
    assert status == 400
    _assert_gunicorn_problem(status, headers, answer, "bad-request")
    assert written_rows(database_url) == 0


def _bad_chunks(body: bytes) -> dict[str, bytes]:
    """``body`` in chunked framing broken one way each: size, extension, terminator, trailer."""
    size = b"%x" % len(body)
    return {
        "size-not-hex": b"zz\r\n" + body + b"\r\n0\r\n\r\n",
        "negative-size": b"-1\r\n" + body + b"\r\n0\r\n\r\n",
        "no-terminator": size + b"\r\n" + body + b"XX0\r\n\r\n",
        "control-in-extension": size + b";\x01\r\n" + body + b"\r\n0\r\n\r\n",
        "forbidden-trailer": chunked(body)[:-2] + b"Content-Length: 5\r\n\r\n",
        "trailer-without-colon": chunked(body)[:-2] + b"not a field\r\n\r\n",
    }


@pytest.mark.parametrize("path", ["/v1/events", "/healthz"])
@pytest.mark.parametrize("case", sorted(_bad_chunks(b"")))
def test_a_malformed_chunked_body_is_400_and_writes_nothing(server, database_url, path, case):
    # Gunicorn parses a chunked body only as the app reads it: the error surfaces in the view
    # (or, for a GET, in the body check before it), where it must not become a 500.
    body = _bad_chunks(padded_batch())[case]
    head = post_head(server.port, ["Transfer-Encoding: chunked"], f"bad-chunks-{case}")
    if path != "/v1/events":
        head = head.replace(b"POST /v1/events", b"GET " + path.encode())
    status, headers, answer = _exchange(server.port, head + body)
    assert status == 400, answer
    assert headers["content-type"] == "application/problem+json"
    doc = json.loads(answer)
    assert doc["type"] == "/problems/bad-request" and doc["request_id"] == f"bad-chunks-{case}"
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value, name
    assert written_rows(database_url) == 0
    assert "unhandled error" not in server.log()


@pytest.mark.parametrize(
    ("path", "coding"), [("/v1/events", "gzip, chunked"), ("/healthz", "deflate, chunked")]
)
def test_a_compressing_transfer_coding_is_501_not_read_as_the_body(
    server, database_url, path, coding
):
    # Gunicorn removes the chunking and passes the compressed bytes on as the body.
    head = post_head(server.port, [f"Transfer-Encoding: {coding}"], "coded-body")
    if path != "/v1/events":
        head = head.replace(b"POST /v1/events", b"GET " + path.encode())
    compress = gzip.compress if coding.startswith("gzip") else zlib.compress
    status, headers, answer = _exchange(server.port, head + chunked(compress(padded_batch())))
    assert status == 501, answer
    assert headers["content-type"] == "application/problem+json"
    doc = json.loads(answer)
    assert doc["type"] == "/problems/not-implemented" and doc["request_id"] == "coded-body"
    assert written_rows(database_url) == 0
    # The contract lists it on every operation, as it does 413: both come before any view.
    operations = [op for item in openapi.document()["paths"].values() for op in item.values()]
    assert all("501" in op["responses"] for op in operations if isinstance(op, dict))


def _assert_gunicorn_problem(status: int, headers: dict, answer: bytes, problem_type: str) -> None:
    """Gunicorn's own refusals look like the app's: problem+json, request id, security headers."""
    assert headers["content-type"] == "application/problem+json", answer[:300]
    doc = json.loads(answer)
    assert doc["status"] == status and doc["type"] == f"/problems/{problem_type}"
    assert doc["title"] and doc["detail"] and doc["request_id"] == headers["x-request-id"]
    assert headers["x-correlation-id"] == doc["request_id"]  # as the app's, with none sent
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value, name


@pytest.mark.parametrize(
    ("request_bytes", "status", "problem_type"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "uri-too-long"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(120))
            + b"\r\n",
            431,
            "headers-too-large",
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n", 400, "bad-request"),
        (b"NOT A REQUEST\r\n\r\n", 400, "bad-request"),
    ],
    ids=["long-request-line", "too-many-headers", "bad-header-name", "bad-request-line"],
)
def test_requests_gunicorn_refuses_get_problem_json(server, request_bytes, status, problem_type):
    got, headers, answer = _exchange(server.port, request_bytes)
    assert got == status, answer[:300]
    _assert_gunicorn_problem(status, headers, answer, problem_type)


@pytest.mark.parametrize(
    ("path", "status"),
    [("/healthz", 200), ("/mounted/healthz", 404)],
    ids=["path-outside-it", "path-under-it"],
)
def test_a_script_name_header_from_a_local_client_changes_no_route(server, path, status):
    # Loopback peers are gunicorn's trusted forwarders by default: their SCRIPT_NAME header
    # was taken as the mount point of the app.
    request = f"GET {path} HTTP/1.1\r\nHost: t\r\nSCRIPT_NAME: /mounted\r\n\r\n".encode()
    got, headers, answer = _exchange(server.port, request)
    assert got == status, answer[:300]
    assert headers["x-content-type-options"] == "nosniff"


CANARY = "canary-key-5e1f0c9a7d3b"


@pytest.mark.parametrize(
    ("request_bytes", "kind"),
    [
        # The API key's header line without its colon.
        (
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-API-Key " + CANARY.encode() + b"\r\n\r\n",
            "Invalid HTTP Header",
        ),
        # A token in the query string of a request line gunicorn refuses (a raw 0x7f).
        (
            b"GET /healthz?token=" + CANARY.encode() + b"&q=\x7f HTTP/1.1\r\nHost: t\r\n\r\n",
            "Invalid HTTP request line",
        ),
    ],
    ids=["header-line-without-colon", "request-line-with-token"],
)
def test_gunicorn_logs_a_refused_request_without_what_the_client_sent(server, request_bytes, kind):
    status, headers, answer = _exchange(server.port, request_bytes)
    _assert_gunicorn_problem(status, headers, answer, "bad-request")
    log = server.log()
    assert f"Invalid request from ip=127.0.0.1: {kind}" in log  # still logged, and why
    assert CANARY not in log


def test_a_client_gone_mid_body_leaves_no_row_and_the_worker_serves_on(server, database_url):
    body = padded_batch()
    for _ in range(4):  # more than the workers: each one sees a truncated body
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(post_head(server.port, [f"Content-Length: {len(body)}"]) + body[:20])
            # RST instead of FIN: the worker's next read fails at once.
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    status, _, answer = _exchange(
        server.port, post_head(server.port, [f"Content-Length: {len(body)}"]) + body
    )
    assert status == 202, answer
    assert written_rows(database_url) == 3


@pytest.fixture
def impatient(gunicorn_server, database_url):
    """One worker that drops a client silent for 1 s: a stalled client shows at once."""
    return gunicorn_server(database_url, workers=1, RECO_CLIENT_TIMEOUT_S="1")


def _answer_within(sock: socket.socket, seconds: float) -> bytes:
    """Read until the server closes (or resets) the connection; bounded by ``seconds``."""
    sock.settimeout(seconds)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65_536):
            received += chunk
    return received


def test_a_client_stalled_in_its_head_is_dropped_and_frees_the_worker(impatient):
    # Without the socket timeout the only worker would wait for this client for 30 s, then
    # gunicorn would kill it (WORKER TIMEOUT).
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=5) as stalled:
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        assert _answer_within(stalled, 10) == b""  # closed without an answer, as nginx does
        assert time.monotonic() - started < 5
    status, _, _ = _exchange(impatient.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    log = impatient.log()
    assert "WORKER TIMEOUT" not in log
    assert "Traceback" not in log  # a stalled client is no server error


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_stops_arriving_is_408_problem_json_and_writes_nothing(
    impatient, database_url, framing
):
    body = padded_batch()
    if framing == "chunked":
        head = post_head(impatient.port, ["Transfer-Encoding: chunked"])
        sent = chunked(body)[: len(body) // 2]
    else:
        head = post_head(impatient.port, [f"Content-Length: {len(body)}"])
        sent = body[: len(body) // 2]
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=5) as stalled:
        stalled.sendall(head + sent)  # half the body, then silence
        received = _answer_within(stalled, 10)
    head_text, _, answer = received.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.1 408 "), received[:300]
    assert b"connection: close" in head_text.lower()
    problem = json.loads(answer)
    assert problem["status"] == 408 and problem["type"].endswith("/request-timeout")
    assert written_rows(database_url) == 0
    assert "WORKER TIMEOUT" not in impatient.log()
