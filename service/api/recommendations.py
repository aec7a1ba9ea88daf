"""GET /v1/users/{user_id}/recommendations."""

from __future__ import annotations

from flask import Blueprint, Response, request

from service import openapi
from service.api.common import client_id, json_response, runtime
from service.db.recommendations import history, popular
from service.problems import ApiProblem
from service.ranking import rank

blueprint = Blueprint("recommendations", __name__)

CANDIDATE_POOL = 200  # >= the largest limit (100), so every limit can be filled


PARAMS = "paths/~1v1~1users~1{user_id}~1recommendations/get/parameters"
DEFAULT_LIMIT, DEFAULT_SURFACE = 20, "home"  # the OpenAPI document's defaults (a test checks)


def _query_params() -> tuple[int, str]:
    """Validate limit and surface against their OpenAPI schemas; reject unknown or repeated ones."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    if not req.environ.get("QUERY_STRING"):
        return DEFAULT_LIMIT, DEFAULT_SURFACE  # nothing to parse: the documented defaults
    args = req.args
    _refuse(sorted(set(args) - {"limit", "surface"}), "unknown query parameter")
    # args.get takes the first of ?limit=1&limit=2 while a proxy or cache may read the last:
    # an ambiguous request is refused rather than answered for one reading of it.
    _refuse(sorted(n for n, v in args.lists() if len(v) > 1), "repeated query parameter")
    raw = args.get("limit", str(DEFAULT_LIMIT))
    # Query strings are text: coerce only plain digit strings, let the schema judge the rest.
    limit: object = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else raw
    openapi.validate(limit, f"{PARAMS}/1/schema", "query parameter limit", 400, "/limit")
    surface = args.get("surface", DEFAULT_SURFACE)
    openapi.validate(surface, f"{PARAMS}/2/schema", "query parameter surface", 400, "/surface")
    return int(limit), surface  # type: ignore[call-overload]


def _refuse(names: list[str], detail: str) -> None:
    """Raise a 400 problem pointing at each named query parameter, if there is any."""
    if names:
        raise ApiProblem(
            400,
            "invalid-parameter",
            detail + "s",
            # The Problem schema lists at most 20 errors (a 10 KB query string holds more).
            errors=[{"pointer": f"/{n}", "detail": detail} for n in names[: openapi.MAX_ERRORS]],
        )


@blueprint.get("/v1/users/<user_id>/recommendations")
def recommendations(user_id: str) -> Response:
    """Rank the popular pool for the user; unknown users get the popular items."""
    client_id()
    openapi.validate(
        user_id, openapi.parameter_schema("UserId"), "path parameter user_id", 400, "/user_id"
    )
    limit, surface = _query_params()
    rt = runtime()
    cache = rt.popular
    budget = rt.settings.read_deadline_ms / 1000
    with rt.db.unit_of_work(budget, autocommit=True) as uow, uow.cursor() as cur:
        if not cache.fresh():
            cache.store(popular(cur, CANDIDATE_POOL))
        affinity, seen = history(cur, user_id)
    pool = cache.get()
    personal = bool(affinity or seen)
    items = rank(pool, affinity, seen, limit) if personal else pool.popular[:limit]
    return json_response(
        {
            "user_id": user_id,
            "surface": surface,
            "fallback": not personal,
            "items": items,  # orjson writes each Ranked dataclass as its fields, in order
        }
    )
