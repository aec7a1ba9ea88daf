"""Helpers shared by the API blueprints."""

from __future__ import annotations

import math

import orjson
from flask import Response, current_app, request

from service.auth import HEADER, authenticate
from service.problems import ApiProblem


def runtime():
    """The app's Runtime (settings, db, limits, metrics)."""
    return current_app.extensions["reco"]


def client_id() -> str:
    """Authenticate the caller and apply its rate limit; return its client id."""
    rt = runtime()
    try:
        client = authenticate(request.headers.get(HEADER), rt.settings.api_keys)
    except ApiProblem:
        _throttle_auth_failures(rt)
        raise
    if not rt.rate_limit.allow(client):
        raise shed(
            rt,
            "rate_limited",
            "rate-limited",
            "request rate limit exceeded for this API key",
            rt.rate_limit.wait_s({client: 1}),
        )
    return client


def shed(rt, reason: str, problem_type: str, detail: str, wait_s: float) -> ApiProblem:
    """Count a request refused by a rate limit; its 429 problem tells when to come back."""
    rt.metrics.shed.labels(reason).inc()
    # Whole seconds, never less than the bucket needs to refill: a client that waits as told
    # must find its tokens back (at 0.5 requests/s, "1" would earn it a second 429).
    seconds = max(rt.settings.retry_after_s, math.ceil(wait_s))
    return ApiProblem(429, problem_type, detail, headers={"Retry-After": str(seconds)})


def _throttle_auth_failures(rt) -> None:
    """Answer 429 instead of 401 once a client address has failed authentication too often."""
    # Keyed by the socket's peer, never X-Forwarded-For: a client could rotate that header
    # to get a fresh bucket for every guess. Behind a proxy all clients share its address.
    address = request.environ.get("REMOTE_ADDR") or "-"
    if rt.auth_failures.allow(address):
        return
    rt.metrics.shed.labels("auth_failures").inc()
    # A token comes back every 1/rate seconds; Retry-After is whole seconds, at least 1.
    wait = max(rt.settings.retry_after_s, math.ceil(1 / rt.settings.auth_failure_rate_per_s))
    raise ApiProblem(
        429,
        "too-many-auth-failures",
        "too many failed authentications from this address",
        headers={"Retry-After": str(wait)},
    )


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Serialise with orjson (fast, and NaN is impossible in our output)."""
    response = Response(orjson.dumps(body), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
