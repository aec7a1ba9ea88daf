"""API-key authentication: keys are stored as SHA-256 digests and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from service.problems import ApiProblem

HEADER = "X-API-Key"


def authenticate(presented: str | None, keys: tuple[tuple[str, str], ...]) -> str:
    """Return the client id owning ``presented`` or raise a 401 problem."""
    if not presented:
        raise _unauthorized("missing API key")
    digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).hexdigest()
    owner = None
    # Compare against every key so the time taken does not reveal which one matched.
    for client_id, stored in keys:
        if hmac.compare_digest(digest, stored):
            owner = client_id
    if owner is None:
        raise _unauthorized("invalid API key")
    return owner


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(
        401, "unauthorized", detail, headers={"WWW-Authenticate": f'ApiKey header="{HEADER}"'}
    )
