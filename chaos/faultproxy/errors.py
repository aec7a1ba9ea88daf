"""The API's typed errors, carrying the HTTP status Go would send."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered as {"error": message, "status": status}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_body(detail: object) -> ApiError:
    """Return Go's "bad request body: <decoder error>"."""
    return ApiError(400, f"bad request body: {detail}")


def missing(field: str) -> ApiError:
    """Return Go's "missing required field: <field>"."""
    return ApiError(400, f"missing required field: {field}")


PROXY_NOT_FOUND = (404, "proxy not found")
PROXY_EXISTS = (409, "proxy already exists")
TOXIC_NOT_FOUND = (404, "toxic not found")
TOXIC_EXISTS = (409, "toxic already exists")
INVALID_STREAM = (400, "stream was invalid, can be either upstream or downstream")
INVALID_TYPE = (400, "invalid toxic type")
