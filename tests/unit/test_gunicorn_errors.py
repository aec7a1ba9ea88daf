"""Gunicorn's own error page, rewritten as the problem document every other error is."""

from __future__ import annotations

import json
import logging

from gunicorn import util

from service import gunicorn_errors
from service.middleware import SECURITY_HEADERS


def _parse(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    return status_line, dict(line.split(": ", 1) for line in lines), body


def test_a_refusal_is_a_problem_with_the_ids_and_security_headers():
    answer = gunicorn_errors.problem_answer(
        431, "Request Header Fields Too Large", "Error parsing headers: 'limit'", "abc123"
    )
    status_line, headers, body = _parse(answer)
    assert status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Connection"] == "close" and int(headers["Content-Length"]) == len(body)
    assert headers["X-Request-ID"] == "abc123"
    assert {k: headers[k] for k in SECURITY_HEADERS} == SECURITY_HEADERS
    assert json.loads(body) == {
        "type": "/problems/headers-too-large",
        "title": "Request Header Fields Too Large",
        "status": 431,
        "detail": "Error parsing headers: 'limit'",
        "request_id": "abc123",
    }


def test_the_quoted_input_is_cut_and_an_empty_message_becomes_the_reason():
    long = json.loads(
        _parse(gunicorn_errors.problem_answer(400, "Bad Request", "x" * 5000, "i"))[2]
    )
    assert len(long["detail"]) == gunicorn_errors.MAX_DETAIL
    empty = json.loads(
        _parse(gunicorn_errors.problem_answer(500, "Internal Server Error", "", "i"))[2]
    )
    assert (
        empty["detail"] == "Internal Server Error" and empty["type"] == "/problems/internal-error"
    )


def test_install_replaces_the_page_gunicorn_writes(monkeypatch):
    monkeypatch.setattr(util, "write_error", util.write_error)  # restored after the test
    monkeypatch.setattr(logging.getLogger("gunicorn.error"), "filters", [])  # and so are these
    sent: list[bytes] = []
    monkeypatch.setattr(util, "write_nonblock", lambda _sock, data: sent.append(data))
    gunicorn_errors.install()
    util.write_error(None, 414, "URI Too Long", "line too long")
    assert _parse(sent[0])[0] == "HTTP/1.1 414 URI Too Long"
    assert json.loads(_parse(sent[0])[2])["type"] == "/problems/uri-too-long"


def test_a_request_aborted_mid_way_is_logged_without_its_query_string():
    record = logging.LogRecord(
        "gunicorn.error", logging.ERROR, __file__, 1, "Error handling request %s %s",
        ("POST", "/v1/events?token=secret"), None,
    )  # fmt: skip
    assert gunicorn_errors.redact_client_input(record) is True
    assert record.getMessage() == "Error handling request POST /v1/events"


def test_a_refusal_from_an_ipv6_peer_keeps_the_address_and_the_kind_only():
    record = logging.LogRecord(
        "gunicorn.error", logging.WARNING, __file__, 1,
        "Invalid request from ip=::1: Invalid HTTP Header: 'X-API-Key secret'", None, None,
    )  # fmt: skip
    gunicorn_errors.redact_client_input(record)
    assert record.getMessage() == "Invalid request from ip=::1: Invalid HTTP Header"
