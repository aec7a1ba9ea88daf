"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

import functools

import psycopg2.errors
from flask import Blueprint, Response

from migrations.files import discover
from service import openapi
from service.api.common import json_response, runtime
from service.db.health import migrated
from service.problems import ApiProblem

blueprint = Blueprint("health", __name__)

READINESS_BUDGET_S = 0.5


@functools.lru_cache(maxsize=1)
def _known() -> list[int]:
    """The versions of the migrations this code ships, in order."""
    migrations, _ = discover()
    return sorted(m.version for m in migrations)


@blueprint.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers; dependencies are never checked here."""
    return json_response({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Readiness: the database answers within the budget and migrations are at head.

    Every migration this code ships must be applied. Newer ones are fine: migrations are
    expand/contract, so code rolled back onto a schema ahead of it still works with it.
    """
    rt = runtime()
    known = _known()
    try:
        # One round trip (no BEGIN or ROLLBACK), and a failure never opens the breaker.
        probe = rt.db.unit_of_work(READINESS_BUDGET_S, autocommit=True, probe=True)
        with probe as uow, uow.cursor() as cur:
            top, applied = migrated(cur, known)
    except psycopg2.errors.UndefinedTable:
        # A database never migrated has no schema_migrations table: nothing is applied yet.
        top, applied = 0, 0
    if applied != len(known):
        raise ApiProblem(
            503,
            "migrations-pending",
            f"{len(known) - applied} of the code's {len(known)} migrations not applied"
            f" (schema at version {top}, code expects {known[-1] if known else 0})",
            headers={"Retry-After": str(rt.settings.retry_after_s)},
        )
    return json_response({"status": "ready", "checks": {"database": "ok", "schema_version": top}})


@blueprint.get("/openapi.json")
def openapi_document() -> Response:
    """Serve the OpenAPI document that is the contract of this API."""
    return json_response(openapi.document())
