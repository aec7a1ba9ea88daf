"""Turn every error, including Werkzeug's and unexpected ones, into problem+json."""

from __future__ import annotations

import logging

from flask import Flask, Response, g
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from service.problems import OTHER_TYPE, TYPES, ApiProblem, from_exception, problem_response

log = logging.getLogger("reco.http")


def install(app: Flask) -> None:
    """Register error handlers on ``app``."""

    @app.errorhandler(ApiProblem)
    def api_problem(exc: ApiProblem) -> Response:
        return from_exception(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        detail = {
            404: "no such resource",
            405: "method not allowed on this resource",
            413: "request body too large",
        }.get(status, exc.description or "")
        return problem_response(status, TYPES.get(status, OTHER_TYPE), detail, headers=headers)

    @app.errorhandler(ParseException)
    def malformed_body(_exc: ParseException) -> Response:
        # Gunicorn reads a chunked body only as the app asks for it, so a bad chunk size,
        # extension, terminator or trailer is raised here, inside the request, as gunicorn's
        # parse error (no longer an OSError that werkzeug would turn into a 400).
        return problem_response(400, "bad-request", "malformed chunked request body")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.error(
            "unhandled error", exc_info=exc, extra={"request_id": getattr(g, "request_id", None)}
        )
        return problem_response(500, "internal-error", "an unexpected error occurred")
