"""Gunicorn's own error answers (requests it cannot parse) as RFC 9457 problem documents.

Gunicorn refuses a bad request line, an over-long header block or ambiguous framing before
the app sees a byte, and answers with a text/html page of its own. Every other error of this
API is problem+json with a request id and the security headers, so clients (and the edge,
which passes upstream errors on untouched) would otherwise meet a second error format.
Gunicorn has no setting for that page; it writes it through ``gunicorn.util.write_error``,
looked up at each call, which ``install()`` replaces in each worker (service/gunicorn.conf.py).

Gunicorn also logs each refusal with the input it refused quoted, and a request it had to
abort with its whole URI: a malformed header line can be ``X-API-Key <secret>`` without its
colon, a query string can carry a token. ``install()`` keeps that input out of its log.
"""

from __future__ import annotations

import logging
import re
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
        # The app's rule when a client sent no usable id: the correlation id is the request's.
        ("X-Correlation-ID", request_id),
        *SECURITY_ITEMS,
    ]
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (head + "\r\n").encode("latin-1") + body


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error``: the same answer, as a problem document."""
    util.write_nonblock(sock, problem_answer(status_int, reason, mesg, uuid.uuid4().hex))


# "Invalid request from ip=<address>: <kind of error>: <the client's input>"
_REFUSAL = re.compile(r"(Invalid request from ip=\S*?: [^:]*)")
_ABORTED = "Error handling request %s"  # then the method and URI, or the URI alone


def redact_client_input(record: logging.LogRecord) -> bool:
    """Cut the client's input from gunicorn's log lines about a request; log every line."""
    msg = record.msg
    if not isinstance(msg, str):
        return True
    if msg.startswith("Invalid request from ip="):
        # Already formatted (no args): keep who and what kind of error, not what was sent.
        match = _REFUSAL.match(msg)
        record.msg = match.group(1) if match else "Invalid request"
    elif msg.startswith(_ABORTED) and isinstance(record.args, tuple):
        # The path stays; the query string, where the API never reads anything, goes.
        record.args = tuple(str(arg).partition("?")[0] for arg in record.args)
    return True


def install() -> None:
    """Answer gunicorn's own errors as problem+json and keep client input out of its log."""
    util.write_error = write_problem
    logging.getLogger("gunicorn.error").addFilter(redact_client_input)  # added once only
