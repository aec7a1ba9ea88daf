"""Helpers shared by the API blueprints."""

from __future__ import annotations

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
    client = authenticate(request.headers.get(HEADER), rt.settings.api_keys)
    if not rt.rate_limit.allow(client):
        rt.metrics.shed.labels("rate_limited").inc()
        raise ApiProblem(
            429,
            "rate-limited",
            "request rate limit exceeded for this API key",
            headers={"Retry-After": str(rt.settings.retry_after_s)},
        )
    return client


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Serialise with orjson (fast, and NaN is impossible in our output)."""
    response = Response(orjson.dumps(body), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
