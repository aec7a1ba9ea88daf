"""The tier catches real regressions: Schemathesis runs against app variants with one injected."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask, request

from harness.contract.fixtures import contract_settings
from harness.contract.inprocess import load_schema
from harness.contract.probe import collect_failures, failed_checks
from harness.pytest_plugins.service import API_KEY
from service.app import create_app

schema, _allowlist, _dropped = load_schema(API_KEY)

RECOMMENDATIONS = "GET /v1/users/{user_id}/recommendations"
EVENT_READ = "GET /v1/events/{event_id}"


def _wrap(app: Flask, endpoint: str, change: Callable) -> None:
    view = app.view_functions[endpoint]

    def broken(**kwargs):
        return change(app.make_response(view(**kwargs)))

    app.view_functions[endpoint] = broken


def score_as_string(app, _monkeypatch):
    """A response field of the wrong type: score becomes a string."""

    def change(response):
        if response.status_code == 200:
            body = response.get_json()
            for item in body["items"]:
                item["score"] = str(item["score"])
            response.set_data(json.dumps(body))
        return response

    _wrap(app, "recommendations.recommendations", change)


def gone_instead_of_not_found(app, _monkeypatch):
    """An undocumented status code: 410 where the document says 404."""

    @app.after_request
    def change(response):
        # Errors are raised as exceptions and rendered later, so change the final response.
        if request.endpoint == "events.get_event" and response.status_code == 404:
            response.status_code = 410
        return response


def auth_skipped(_app, monkeypatch):
    """Authentication dropped from an operation that declares it."""
    monkeypatch.setattr("service.api.recommendations.client_id", lambda: "dev")


def challenge_header_dropped(app, _monkeypatch):
    """A required response header (WWW-Authenticate on 401) no longer sent."""

    @app.after_request
    def drop(response):
        response.headers.pop("WWW-Authenticate", None)
        return response


def correlation_id_dropped(app, _monkeypatch):
    """A header every response carries (X-Correlation-ID) no longer sent."""

    inner = app.wsgi_app  # the header is added at the WSGI boundary, so removed there too

    def without_correlation_id(environ, start_response):
        def start(status, headers, exc_info=None):
            kept = [(k, v) for k, v in headers if k != "X-Correlation-ID"]
            return start_response(status, kept, exc_info)

        return inner(environ, start)

    app.wsgi_app = without_correlation_id


def crashes(app, _monkeypatch):
    """An unhandled exception (a 500) in a view."""

    def change(_response):
        raise RuntimeError("injected regression")

    _wrap(app, "recommendations.recommendations", change)


REGRESSIONS = [
    (score_as_string, RECOMMENDATIONS, "response_schema_conformance"),
    (gone_instead_of_not_found, EVENT_READ, "status_code_conformance"),
    (auth_skipped, RECOMMENDATIONS, "ignored_auth"),
    (challenge_header_dropped, RECOMMENDATIONS, "response_headers_conformance"),
    (correlation_id_dropped, EVENT_READ, "response_headers_conformance"),
    (crashes, RECOMMENDATIONS, "not_a_server_error"),
]


@pytest.fixture
def fresh_app(contract_database_url):
    """A new app per test, so a regression injected into it never leaks into another test."""
    app = create_app(contract_settings(contract_database_url))
    yield app
    app.extensions["reco"].db.pool.close()


@pytest.mark.parametrize(
    ("inject", "label", "check"), REGRESSIONS, ids=[r[0].__name__ for r in REGRESSIONS]
)
def test_injected_regression_is_reported(fresh_app, monkeypatch, inject, label, check):
    """Each regression makes Schemathesis report a failure from the check that guards it."""
    inject(fresh_app, monkeypatch)
    failures = collect_failures(schema, label, fresh_app, max_examples=15)
    assert check in failed_checks(failures), [repr(f) for f in failures]


@pytest.mark.parametrize("label", [RECOMMENDATIONS, EVENT_READ])
def test_the_unbroken_app_passes_the_same_probe(fresh_app, label):
    """Control: the same generation against the real app reports nothing."""
    assert collect_failures(schema, label, fresh_app, max_examples=15) == []
