"""Per-request plumbing: request ids, load shedding, security headers and access logs."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from service.problems import problem_response

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


def _well_formed(value: str | None) -> str | None:
    return value if value and _ID_RE.fullmatch(value) else None


def install(app: Flask) -> None:
    """Register the before/after/teardown hooks on ``app``."""
    runtime = app.extensions["reco"]

    @app.before_request
    def start() -> Response | None:
        g.started = time.perf_counter()
        g.request_id = _well_formed(request.headers.get("X-Request-ID")) or uuid.uuid4().hex
        g.correlation_id = _well_formed(request.headers.get("X-Correlation-ID")) or g.request_id
        g.entered = False
        if request.path in EXEMPT_PATHS:
            return None
        if not runtime.limiter.try_enter():
            runtime.metrics.shed.labels("inflight").inc()
            return problem_response(
                503,
                "overloaded",
                "too many requests in flight on this worker",
                headers={"Retry-After": str(runtime.settings.retry_after_s)},
            )
        g.entered = True
        runtime.metrics.inflight.inc()
        return None

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", "-")
        if getattr(g, "correlation_id", None):
            response.headers["X-Correlation-ID"] = g.correlation_id
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        started = getattr(g, "started", None)
        duration_ms = round((time.perf_counter() - started) * 1000, 3) if started else None
        log.info(
            "request",
            extra={
                "request_id": getattr(g, "request_id", None),
                "correlation_id": getattr(g, "correlation_id", None),
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
            },
        )
        return response

    @app.teardown_request
    def leave(_exc: BaseException | None) -> None:
        if getattr(g, "entered", False):
            g.entered = False
            runtime.limiter.leave()
            runtime.metrics.inflight.dec()
