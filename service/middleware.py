"""Per-request plumbing: request ids, load shedding, security headers, access logs, metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable

from flask import Flask, Request, Response, g, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from service import wallclock
from service.metrics import UNMATCHED, ServiceMetrics, path
from service.problems import ApiProblem, problem_response

log = logging.getLogger("reco.http")

_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
SECURITY_ITEMS = tuple(SECURITY_HEADERS.items())
IDS_KEY = "reco.ids"  # WSGI environ key: (request id, correlation id) once the request starts
ROUTE_KEY = "reco.route"  # WSGI environ key: the matched route template (the metrics' path)
NO_IDS = ("-", "-")
BODY_READERS = frozenset({"events.post_events"})  # endpoints whose views read (and size-check) it


def body_within_limit(req: Request) -> bytes:
    """Read the whole body; 413 when it is over MAX_CONTENT_LENGTH, however it is framed."""
    coding = req.environ.get("HTTP_TRANSFER_ENCODING")
    if coding is not None and coding.strip().lower() != "chunked":
        # Gunicorn takes "gzip, chunked" (or deflate, compress) but only removes the chunking:
        # the app would read compressed bytes as the body. The edge answers 501 to it too.
        raise ApiProblem(
            501,
            "not-implemented",
            "transfer codings other than chunked are not supported: send the body uncompressed",
        )
    try:
        raw = req.get_data(cache=False)  # werkzeug refuses a Content-Length over the limit here
    except ClientDisconnected:
        # The worker's socket reads a stall as the end of the stream and remembers it.
        if _stalled_socket(req):
            raise _stalled() from None
        raise
    if _stalled_socket(req):  # gunicorn marks its input terminated: a short read looks complete
        raise _stalled()
    # A chunked body has no Content-Length: werkzeug stops reading at the limit without
    # complaint, so an over-long body would be judged (or even accepted) by its first part.
    if req.content_length is not None:  # the usual case: werkzeug checked it
        return raw
    limit = req.max_content_length
    if limit is None or len(raw) < limit:
        return raw
    if req.environ["wsgi.input"].read(1):  # the server's own reader: ends with the body
        raise RequestEntityTooLarge()
    if _stalled_socket(req):  # the body seemed to end at the limit: the client stalled there
        raise _stalled()
    return raw


def _stalled_socket(req: Request) -> bool:
    return getattr(req.environ.get("gunicorn.socket"), "timed_out", False) is True


def _stalled() -> ApiProblem:
    """408: the body stopped arriving for RECO_CLIENT_TIMEOUT_S (service/gunicorn_worker.py)."""
    return ApiProblem(
        408,
        "request-timeout",
        "the request body stopped arriving: send it without pauses",
        headers={"Connection": "close"},  # where the next request would start is unknown
    )


def _well_formed(value: str | None) -> str | None:
    return value if value and _ID_RE.fullmatch(value) else None


def queue_time_ms(header: str | None, now: float) -> float | None:
    """Parse X-Request-Start (`t=<seconds|ms|µs since epoch>`, as nginx/HAProxy set it)."""
    if not header:
        return None
    raw = header.strip().removeprefix("t=")
    try:
        value = float(raw)
    except ValueError:
        return None
    # Seconds (~1.7e9), milliseconds (~1.7e12) or microseconds (~1.7e15) since the epoch.
    for divisor in (1.0, 1e3, 1e6):
        seconds = value / divisor
        if abs(now - seconds) < 86_400:
            return max(0.0, (now - seconds) * 1000)
    return None


def install(app: Flask) -> None:
    """Register the before/teardown hooks on ``app`` and wrap its WSGI callable."""
    runtime = app.extensions["reco"]
    app.wsgi_app = ids_headers_and_access_log(  # type: ignore[method-assign]
        app.wsgi_app, runtime.metrics
    )

    @app.before_request
    def start() -> Response | None:
        # Read the proxies once: each access to request/g through werkzeug's locals costs.
        req = request._get_current_object()  # type: ignore[attr-defined]
        ctx = g._get_current_object()  # type: ignore[attr-defined]
        headers = req.headers
        ctx.request_id = _well_formed(headers.get("X-Request-ID")) or uuid.uuid4().hex
        ctx.correlation_id = _well_formed(headers.get("X-Correlation-ID")) or ctx.request_id
        req.environ[IDS_KEY] = (ctx.request_id, ctx.correlation_id)
        req.environ[ROUTE_KEY] = path(req)
        ctx.entered = False
        environ = req.environ
        # Only POST /v1/events reads a body; any other request (a GET, a POST to a path
        # without a POST view) may still carry one, and one over the limit is refused as
        # documented (413 problem+json) rather than ignored. Two lookups when there is no
        # body, which is every other request.
        has_body = environ.get("CONTENT_LENGTH") or "HTTP_TRANSFER_ENCODING" in environ
        if has_body and req.endpoint not in BODY_READERS:
            body_within_limit(req)
        if req.path in EXEMPT_PATHS:
            return None
        queued_ms = queue_time_ms(headers.get("X-Request-Start"), wallclock.now())
        max_queue = runtime.settings.max_queue_ms
        if max_queue and queued_ms is not None and queued_ms > max_queue:
            # Waited in a proxy or the listen backlog past its budget: the client has likely
            # given up, so answer cheaply instead of doing work nobody reads.
            runtime.metrics.shed.labels("queue_time").inc()
            return problem_response(
                503,
                "overloaded",
                f"request queued {queued_ms:.0f} ms before a worker took it",
                headers={"Retry-After": str(runtime.settings.retry_after_s)},
            )
        if not runtime.limiter.try_enter():
            runtime.metrics.shed.labels("inflight").inc()
            return problem_response(
                503,
                "overloaded",
                "too many requests in flight on this worker",
                headers={"Retry-After": str(runtime.settings.retry_after_s)},
            )
        ctx.entered = True
        runtime.metrics.inflight.inc()
        return None

    @app.teardown_request
    def leave(_exc: BaseException | None) -> None:
        if getattr(g, "entered", False):
            g.entered = False
            runtime.limiter.leave()
            runtime.metrics.inflight.dec()


def ids_headers_and_access_log(wsgi_app: Callable, metrics: ServiceMetrics) -> Callable:
    """Add ids and security headers to every response, log one line and count it.

    Done at the WSGI boundary, not in an ``after_request`` hook: every response passes here,
    including ones Flask builds for errors, and the header list is extended directly instead
    of through werkzeug's per-header validation (our values are constants and checked ids).
    ``metrics.observe_request`` records the request series.
    """

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()

        def start(status: str, headers: list, exc_info=None):
            request_id, correlation_id = ids = environ.get(IDS_KEY, NO_IDS)
            record_request(metrics, environ, status, time.perf_counter() - started, ids)
            headers.extend(
                [
                    ("X-Request-ID", request_id),
                    ("X-Correlation-ID", correlation_id),
                    *SECURITY_ITEMS,
                ]
            )
            return start_response(status, headers, exc_info)

        return wsgi_app(environ, start)

    return app


def record_request(
    metrics: ServiceMetrics, environ: dict, status: str, seconds: float, ids: tuple[str, str]
) -> None:
    """Count the answered request in the request series and write its JSON access line."""
    method = environ.get("REQUEST_METHOD", "")
    code = status[:3]
    metrics.observe_request(method, environ.get(ROUTE_KEY, UNMATCHED), code, seconds)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "request",
            extra={
                "request_id": ids[0],
                "correlation_id": ids[1],
                "method": method,
                "path": _path(environ),
                "status": int(code),
                "duration_ms": round(seconds * 1000, 3),
            },
        )


def _path(environ: dict) -> str:
    # WSGI carries the path as latin-1 text of the raw bytes; log it as the UTF-8 it was.
    return environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
