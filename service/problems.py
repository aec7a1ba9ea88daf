"""RFC 9457 problem details: one exception type and one response builder for every error."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from flask import Response, g, has_request_context, request

MEDIA_TYPE = "application/problem+json"

# Problem type names by status, for errors raised outside our views (Werkzeug's, gunicorn's
# own refusals); the edge uses the same names (deploy/nginx/reco-api.conf).
TYPES = {
    400: "bad-request",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "content-too-large",
    414: "uri-too-long",
    415: "unsupported-media-type",
    417: "expectation-failed",
    431: "headers-too-large",
    500: "internal-error",
    501: "not-implemented",
}
OTHER_TYPE = "http-error"  # a status without a name above

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiProblem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        problem_type: str,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.problem_type = problem_type
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def problem_response(
    status: int,
    problem_type: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build an application/problem+json response; never includes internals."""
    body: dict[str, Any] = {
        "type": f"/problems/{problem_type}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "request_id": getattr(g, "request_id", None) or "-",
    }
    if has_request_context():
        body["instance"] = instance_of(request.path)
    if errors:
        body["errors"] = errors
    response = Response(orjson.dumps(body), status=status, mimetype=MEDIA_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def instance_of(path: str) -> str:
    """The request's path as a relative URI reference, for the problem's ``instance``."""
    encoded = quote(path, safe="/")
    # "//host/..." would read as a reference to another host: keep it a path.
    return "/%2F" + encoded[2:] if encoded.startswith("//") else encoded


def from_exception(exc: ApiProblem) -> Response:
    """Render a raised ApiProblem."""
    return problem_response(
        exc.status, exc.problem_type, exc.detail, errors=exc.errors, headers=exc.headers
    )
