"""Gunicorn's own error answers (requests it cannot parse) as RFC 9457 problem documents.

Gunicorn refuses a bad request line, an over-long header block or ambiguous framing before
the app sees a byte, and answers with a text/html page of its own. Every other error of this
API is problem+json with a request id and the security headers, so clients (and the edge,
which passes upstream errors on untouched) would otherwise meet a second error format.
Gunicorn has no setting for that page; it writes it through ``gunicorn.util.write_error``,
looked up at each call, which ``install()`` replaces in each worker (service/gunicorn.conf.py).
"""

from __future__ import annotations

import uuid

import orjson
from gunicorn import util

from service.middleware import SECURITY_ITEMS
from service.problems import MEDIA_TYPE, OTHER_TYPE, TYPES

MAX_DETAIL = 300  # gunicorn's message quotes the bad input: keep the answer small


def problem_answer(status: int, reason: str, message: str, request_id: str) -> bytes:
    """The whole HTTP answer gunicorn sends for one refused request, as problem+json."""
    # Gunicorn's message for a 500 is empty (the cause stays in its log).
    detail = (message or reason)[:MAX_DETAIL]
    body = orjson.dumps(
        {
            "type": f"/problems/{TYPES.get(status, OTHER_TYPE)}",
            "title": reason,
            "status": status,
            "detail": detail,
            "request_id": request_id,
        }
    )
    headers = [
        ("Connection", "close"),
        ("Content-Type", MEDIA_TYPE),
        ("Content-Length", str(len(body))),
        ("X-Request-ID", request_id),
        *SECURITY_ITEMS,
    ]
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (head + "\r\n").encode("latin-1") + body


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error``: the same answer, as a problem document."""
    util.write_nonblock(sock, problem_answer(status_int, reason, mesg, uuid.uuid4().hex))


def install() -> None:
    """Make this process's gunicorn workers answer their own errors as problem+json."""
    util.write_error = write_problem
