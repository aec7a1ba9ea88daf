"""`reco-harness smoke` against a real local stack, healthy and broken."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

from harness.cli import main
from harness.pytest_plugins.stack import private_stack
from harness.pytest_plugins.standins import serving
from harness.stack import Stack


@pytest.fixture(scope="module")
def smoke_stack():
    """A complete stack (PostgreSQL, RabbitMQ, API, relay, consumer) for this module."""
    with private_stack("reco-smoke-", test_mode=True) as stack:
        yield stack


def _smoke(stack: Stack, *args: str) -> int:
    return main(["smoke", "--url", stack.state["components"]["api"]["url"], *args])


def test_passes_against_the_local_stack(smoke_stack, capsys):
    assert _smoke(smoke_stack, "--write", "--timeout", "30", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    names = {c["name"]: c for c in report["checks"]}
    assert report["passed"] and len(names) == 9
    assert names["events applied end to end"]["data"]["e2e_latency_ms"] > 0


def test_wrong_url_exits_2_without_a_traceback(capsys):
    assert main(["smoke", "--url", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "Traceback" not in err
    assert main(["smoke", "--url", "ftp://example"]) == 2


def test_a_path_after_the_base_url_exits_2_with_a_hint(smoke_stack, capsys):
    url = smoke_stack.state["components"]["api"]["url"] + "/v1"
    assert main(["smoke", "--url", url]) == 2
    err = capsys.readouterr().err
    assert "/v1/healthz answered 404" in err and "without /v1" in err
    assert "Traceback" not in err


class _HtmlEverywhere(BaseHTTPRequestHandler):
    """A web server that answers every path with 200 and an HTML page."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = b"<html><body>welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_html_answers_fail_their_checks_without_a_traceback(capsys):
    with serving(_HtmlEverywhere) as url:
        assert main(["smoke", "--url", url]) == 1
    out = capsys.readouterr().out
    assert "FAIL  openapi version" in out and "not JSON" in out
    assert "FAIL  recommendations within SLO" in out


def test_stopped_relay_means_events_never_applied(smoke_stack, capsys):
    smoke_stack.stop_app("relay")
    try:
        assert _smoke(smoke_stack, "--write", "--timeout", "3") == 1
        out = capsys.readouterr().out
        assert "FAIL  events applied end to end" in out and "relay" in out
    finally:
        smoke_stack.start_app("relay")


def test_stopped_consumer_is_named(smoke_stack, capsys):
    smoke_stack.stop_app("consumer")
    try:
        assert _smoke(smoke_stack, "--write", "--timeout", "3") == 1
        assert "consumer" in capsys.readouterr().out
    finally:
        smoke_stack.start_app("consumer")


def test_database_down_fails_readiness(smoke_stack, capsys):
    pg = smoke_stack.postgres()
    pg.stop()
    try:
        assert _smoke(smoke_stack) == 1
        out = capsys.readouterr().out
        assert "FAIL  readyz" in out and "HTTP 503" in out
        assert "PASS  healthz" in out
    finally:
        pg.start()
