"""nginx running deploy/nginx/reco-api.conf in front of gunicorn's sync workers."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import requests

from harness.ports import free_port
from harness.pytest_plugins.rawhttp import chunked, padded_batch, post_head, written_rows
from harness.stack.procs import StackError, stop_pid, wait_until
from service.middleware import SECURITY_HEADERS

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy/nginx/reco-api.conf"
LOCAL_NGINX = ROOT / ".venv/nginx/usr/sbin/nginx"
AUTH = {"X-API-Key": "dev-key"}
RECOMMENDATIONS = "/v1/users/u-1/recommendations"
LIMIT = 262_144  # RECO_MAX_CONTENT_LENGTH's default, client_max_body_size in the config
PROBLEM = "application/problem+json"


def _nginx_binary() -> str | None:
    """nginx on PATH, else the one scripts/bootstrap unpacks into .venv/nginx."""
    if found := shutil.which("nginx"):
        return found
    return str(LOCAL_NGINX) if os.access(LOCAL_NGINX, os.X_OK) else None


def render(listen_port: int, upstream_port: int) -> str:
    """The shipped config with its two deployment-specific lines pointed at loopback ports."""
    text = CONF.read_text()
    for shipped, ours in (
        ("listen 8080;", f"listen 127.0.0.1:{listen_port};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
    ):
        assert text.count(shipped) == 1, f"{CONF.name} should hold `{shipped}` exactly once"
        text = text.replace(shipped, ours)
    return text


class Edge:
    """One nginx master running the rendered config under its own prefix directory."""

    def __init__(self, binary: str, prefix: Path, upstream_port: int):
        self.binary = binary
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (prefix / "logs").mkdir(parents=True)
        self.conf = prefix / "reco-api.conf"
        self.conf.write_text(render(self.port, upstream_port))
        self.proc: subprocess.Popen | None = None

    def argv(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf), *extra]

    def start(self) -> None:
        with open(self.prefix / "logs/stderr.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.argv("-g", "daemon off;"),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._listening, 10, "nginx")
        except BaseException:
            self.stop()
            raise

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"nginx exited: {self.error_log()[-2000:]}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc.pid, timeout=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)  # reap it: stop_pid may have collected it already

    def error_log(self) -> str:
        logs = self.prefix / "logs"
        return "".join(
            (logs / name).read_text(errors="replace")
            for name in ("stderr.log", "error.log")
            if (logs / name).exists()
        )

    def access_line(self, request_id: str) -> dict:
        """The access-log line of one request (written just after its answer is sent)."""
        found: list[dict] = []

        def logged() -> bool:
            lines = (self.prefix / "logs/access.log").read_text().splitlines()
            found[:] = [e for e in map(json.loads, lines) if e["request_id"] == request_id]
            return bool(found)

        wait_until(logged, 5, f"access log line of {request_id}", interval=0.02)
        return found[0]


@pytest.fixture
def nginx_binary() -> str:
    binary = _nginx_binary()
    if binary is None:
        pytest.skip("no nginx on PATH or in .venv/nginx (scripts/bootstrap fetches it)")
    return binary


@pytest.fixture
def edge_to(nginx_binary, tmp_path) -> Iterator[Callable[[int], Edge]]:
    """Start nginx in front of an upstream port; stop each one by its pid afterwards."""
    started: list[Edge] = []

    def start(upstream_port: int) -> Edge:
        edge = Edge(nginx_binary, tmp_path / f"nginx-{len(started)}", upstream_port)
        started.append(edge)
        edge.start()
        return edge

    yield start
    for edge in started:
        edge.stop()


@pytest.fixture
def api(gunicorn_server, database_url):
    return gunicorn_server(database_url, workers=2)


@pytest.fixture
def edge(edge_to, api) -> Edge:
    return edge_to(api.port)


@pytest.fixture
def dead_edge(edge_to) -> Edge:
    """nginx whose upstream port has no listener: only nginx's own answers come back."""
    return edge_to(free_port())


# --- raw HTTP --------------------------------------------------------------------------


def _connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one answer: the head, then Content-Length bytes (nginx may keep the socket open)."""
    received = b""
    while b"\r\n\r\n" not in received and (chunk := sock.recv(65_536)):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    while len(body) < int(headers.get("content-length", 0)) and (chunk := sock.recv(65_536)):
        body += chunk
    return int(status_line.split()[1]), headers, body


def _exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with _connect(port) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # refused early: the answer is still there to read
        return _read_answer(sock)


def _slow_body(port: int) -> socket.socket:
    """A POST that announces 100 body bytes and sends 4: a sync worker waits for the rest."""
    return _connect(port, post_head(port, ["Content-Length: 100"]) + b'{"ev')


def _accept_queue(port: int) -> int:
    """Connections waiting in the listen backlog of a loopback listener (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[4].split(":")[1], 16)  # rx_queue of a listener: its backlog
    raise AssertionError(f"nothing listens on port {port}")


def _assert_problem(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    problem_type: str,
    correlation_id: str = "",
) -> dict:
    assert headers["content-type"] == PROBLEM, body
    doc = json.loads(body)
    assert doc["status"] == status
    assert doc["type"] == f"/problems/{problem_type}"
    assert doc["title"] and doc["detail"]
    assert doc["request_id"] == headers["x-request-id"]
    assert headers["x-correlation-id"] == (correlation_id or doc["request_id"])
    for name, value in SECURITY_HEADERS.items():  # as on every answer the app makes
        assert headers[name.lower()] == value, name
    return doc


# --- tests -----------------------------------------------------------------------------


def test_nginx_accepts_the_shipped_config(nginx_binary, tmp_path):
    edge = Edge(nginx_binary, tmp_path, upstream_port=free_port())
    result = subprocess.run(  # noqa: S603 - our own binary and arguments
        edge.argv("-t"), capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr


def test_slow_clients_wait_in_nginx_while_healthy_ones_are_served(api, edge):
    opened = time.monotonic()
    # 40 clients trickling their headers, 4 trickling a body: more than the two workers.
    headers = [_connect(edge.port, b"GET " + RECOMMENDATIONS.encode()) for _ in range(40)]
    bodies = [_slow_body(edge.port) for _ in range(4)]
    latencies = []
    try:
        while time.monotonic() - opened < 2.5:
            for sock in headers:
                sock.sendall(b"?")  # one more byte of the request line
            for sock in bodies:
                sock.sendall(b" ")
            started = time.monotonic()
            answer = requests.get(edge.url + RECOMMENDATIONS, headers=AUTH, timeout=5)
            latencies.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
            time.sleep(0.1)  # the trickle's pace
        assert len(latencies) >= 10
        assert max(latencies) < 1.0, latencies
        # client_header_timeout counts from the first byte: trickling does not extend it.
        for sock in headers:
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""
        assert time.monotonic() - opened < 7.5, "nginx kept header tricklers past 5 s"
    finally:
        for sock in headers + bodies:
            sock.close()


def test_without_nginx_two_slow_bodies_stall_two_sync_workers(api):
    """The control: the same slow bodies sent straight to gunicorn hold every worker."""
    bodies = [_slow_body(api.port) for _ in range(2)]
    try:
        wait_until(lambda: _accept_queue(api.port) == 0, 5, "workers took the slow bodies")
        with pytest.raises(requests.Timeout):
            requests.get(api.url + RECOMMENDATIONS, headers=AUTH, timeout=1.0)
    finally:
        for sock in bodies:
            sock.close()


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_body_over_the_limit_is_413_from_nginx_and_writes_nothing(
    api, edge, database_url, framing
):
    body = padded_batch(LIMIT + 50_000)
    request_id = f"edge-413-{framing}"
    if framing == "chunked":
        data = post_head(edge.port, ["Transfer-Encoding: chunked"], request_id) + chunked(body)
    else:
        data = post_head(edge.port, [f"Content-Length: {len(body)}"], request_id) + body
    status, headers, answer = _exchange(edge.port, data)
    assert status == 413, answer
    doc = _assert_problem(status, headers, answer, "content-too-large")
    assert doc["request_id"] == request_id
    assert edge.access_line(request_id)["upstream_addr"] == "", "gunicorn saw the request"
    assert written_rows(database_url) == 0


def test_a_chunked_body_within_the_limit_reaches_the_app(api, edge, database_url):
    data = post_head(edge.port, ["Transfer-Encoding: chunked"]) + chunked(padded_batch(), size=16)
    status, _, answer = _exchange(edge.port, data)
    assert status == 202, answer
    assert written_rows(database_url) == 3  # the event, its outbox row, the idempotency record


@pytest.mark.parametrize(("fields", "status"), [(50, 200), (51, 431)])
def test_a_client_may_send_fifty_header_fields_through_the_edge(api, edge, fields, status):
    # nginx adds header fields of its own to each request it passes on to gunicorn, whose
    # limit_request_fields must still leave the client 50 of its own.
    lines = [f"X-Field-{i}: v" for i in range(fields - 1)]  # and Host
    request = "GET /healthz HTTP/1.1\r\nHost: edge\r\n" + "".join(f"{h}\r\n" for h in lines)
    got, headers, body = _exchange(edge.port, (request + "\r\n").encode())
    assert got == status, body
    assert headers["content-type"] == (PROBLEM if status == 431 else "application/json")


def test_the_app_sheds_what_queued_behind_busy_workers_by_nginx_clock(
    gunicorn_server, database_url, edge_to
):
    api = gunicorn_server(database_url, workers=2, RECO_MAX_QUEUE_MS="300")
    edge = edge_to(api.port)
    ids = {"X-Request-ID": "edge-queue-1", "X-Correlation-ID": "edge-flow-1"}
    # A client's own X-Request-Start (here: queued 10 s) is replaced by nginx's clock.
    stale = {"X-Request-Start": f"t={time.time() - 10:.3f}"}
    direct = requests.get(api.url + RECOMMENDATIONS, headers={**AUTH, **stale}, timeout=5)
    assert direct.status_code == 503
    first = requests.get(edge.url + RECOMMENDATIONS, headers={**AUTH, **ids, **stale}, timeout=5)
    assert first.status_code == 200, first.text
    assert first.headers["X-Request-ID"] == "edge-queue-1"
    assert first.headers["X-Correlation-ID"] == "edge-flow-1"

    # Both workers busy: nginx hands the request on at once and it waits in the backlog.
    bodies = [_slow_body(api.port) for _ in range(2)]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            wait_until(lambda: _accept_queue(api.port) == 0, 5, "workers took the slow bodies")
            queued = pool.submit(
                requests.get,
                edge.url + RECOMMENDATIONS,
                headers={**AUTH, "X-Request-ID": "edge-queue-2"},
                timeout=5,
            )
            wait_until(lambda: _accept_queue(api.port) == 1, 5, "nginx's request queued")
            time.sleep(0.5)  # the queue time under test, above RECO_MAX_QUEUE_MS
        finally:
            for sock in bodies:
                sock.close()  # the workers see the client gone and take the queued request
        shed = queued.result()
    assert shed.status_code == 503, shed.text
    doc = _assert_problem(503, shed.headers, shed.content, "overloaded")
    assert int(re.search(r"queued (\d+) ms", doc["detail"]).group(1)) >= 500
    assert shed.headers["X-Request-ID"] == "edge-queue-2"
    assert edge.access_line("edge-queue-2")["upstream_status"] == "503"  # the app's, passed on


@pytest.mark.parametrize(
    ("request_bytes", "status", "problem_type"),
    [
        (b"NOT A REQUEST\r\n\r\n", 400, "bad-request"),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: edge\r\n\r\n", 414, "uri-too-long"),
        (
            b"GET / HTTP/1.1\r\nHost: edge\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n",
            431,
            "headers-too-large",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "not-implemented",
        ),
        (
            b"GET /metrics HTTP/1.1\r\nHost: edge\r\nX-Request-ID: edge-404\r\n\r\n",
            404,
            "not-found",
        ),
        (
            b"GET /metrics HTTP/1.1\r\nHost: edge\r\nX-Correlation-ID: flow-7\r\n\r\n",
            404,
            "not-found",
        ),
        (b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n", 502, "bad-gateway"),
        (b"TRACE /v1/events HTTP/1.1\r\nHost: edge\r\n\r\n", 405, "method-not-allowed"),
        (b"GET / HTTP/2.0\r\nHost: edge\r\n\r\n", 505, "http-version-not-supported"),
    ],
    ids=[
        "bad-request-line",
        "long-request-line",
        "long-header",
        "unknown-encoding",
        "metrics",
        "metrics-correlated",
        "upstream-down",
        "trace",
        "http-2.0-request-line",
    ],
)
def test_errors_nginx_makes_itself_are_problem_json(dead_edge, request_bytes, status, problem_type):
    got, headers, body = _exchange(dead_edge.port, request_bytes)
    assert got == status, body
    correlation_id = "flow-7" if b"flow-7" in request_bytes else ""
    _assert_problem(status, headers, body, problem_type, correlation_id)
    assert ("allow" in headers) == (status == 405)  # RFC 9110: a 405 names what is allowed


def test_the_edge_log_keeps_the_path_and_drops_the_query_string(dead_edge):
    request = (
        b"GET /metrics?api_key=canary-secret HTTP/1.1\r\n"
        b"Host: edge\r\nX-Request-ID: edge-log\r\n\r\n"
    )
    assert _exchange(dead_edge.port, request)[0] == 404
    line = dead_edge.access_line("edge-log")
    assert line["path"] == "/metrics" and line["method"] == "GET"
    assert "canary-secret" not in (dead_edge.prefix / "logs/access.log").read_text()


def test_too_many_requests_from_one_address_is_429(dead_edge):
    limit = int(re.search(r"limit_conn reco_per_addr (\d+);", CONF.read_text()).group(1))
    request = b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n"
    bodies = [_slow_body(dead_edge.port) for _ in range(limit)]

    def all_slots_held() -> bool:
        # A probe may take a slot before nginx has read a slow body's header (two worker
        # processes): that body is then the one refused. Replace it until all are held.
        answered, _, _ = select.select(bodies, [], [], 0)
        for sock in answered:
            sock.close()
            bodies[bodies.index(sock)] = _slow_body(dead_edge.port)
        return not answered and _exchange(dead_edge.port, request)[0] == 429

    try:
        wait_until(all_slots_held, 10, f"{limit} requests in flight")
        status, headers, body = _exchange(dead_edge.port, request)
        _assert_problem(status, headers, body, "too-many-connections")
        assert headers["retry-after"] == "1"
    finally:
        for sock in bodies:
            sock.close()
    wait_until(lambda: _exchange(dead_edge.port, request)[0] == 502, 5, "slots freed")


def test_an_upstream_that_never_answers_is_504_after_proxy_read_timeout(edge_to):
    with socket.create_server(("127.0.0.1", free_port())) as silent:  # accepts, never answers
        edge = edge_to(silent.getsockname()[1])
        started = time.monotonic()
        status, headers, body = _exchange(edge.port, b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n")
        waited = time.monotonic() - started
    _assert_problem(status, headers, body, "outcome-unknown")
    assert 4.5 < waited < 7, waited  # proxy_read_timeout 5s
