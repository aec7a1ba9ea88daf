"""The bare baselines: the observed one logs and counts like the service, the plain one doesn't."""

from __future__ import annotations

import logging

import orjson

from harness.bench import bare_app


class Lines(logging.Handler):
    """Keep the access lines the 'reco.http' logger emits."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _access_lines(client, path: str) -> list[logging.LogRecord]:
    handler = Lines()
    http_log = logging.getLogger("reco.http")
    http_log.addHandler(handler)
    try:
        assert orjson.loads(client.get(path).data) == {"ok": 1}
    finally:
        http_log.removeHandler(handler)
    return handler.records


def test_the_observed_baseline_writes_the_services_access_line_and_request_series():
    client = bare_app.observed_app().test_client()
    assert bare_app.observed_app() is bare_app.observed_app()  # wrapped once
    (line,) = _access_lines(client, "/hello")
    assert (line.method, line.path, line.status) == ("GET", "/hello", 200)
    assert line.duration_ms >= 0
    exposition = client.get("/metrics").data.decode()
    assert 'flask_http_request_total{method="GET",status="200"}' in exposition
    assert 'flask_http_request_duration_seconds_count{method="GET",path="/hello"' in exposition


def test_the_plain_baseline_has_neither_log_nor_metrics():
    client = bare_app.app.test_client()
    assert _access_lines(client, "/hello") == []
    assert client.get("/metrics").status_code == 404
