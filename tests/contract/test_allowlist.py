"""The allow-list file: its format, its expiry rule, and what a filter drops."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from schemathesis.checks import load_all_checks

from harness.contract.allowlist import AllowlistError, load, parse
from harness.contract.hooks import failure_filter
from harness.contract.paths import ALLOWLIST_PATH
from service.openapi import document

ENTRY = """
[[allow]]
id = "x"
check = "positive_data_acceptance"
operation = "POST /v1/events"
status = 422
problem_type = "/problems/unknown-item"
reason = "deliberate"
expires = 2027-01-31
"""


def _failure(check="positive_data_acceptance", operation="POST /v1/events"):
    return SimpleNamespace(checks=(check,), operation=operation)


def _response(status=422, body=b'{"type": "/problems/unknown-item"}'):
    return SimpleNamespace(status_code=status, content=body)


def test_an_entry_is_honoured_through_its_expiry_date_and_not_after():
    assert parse(ENTRY, dt.date(2027, 1, 31)).active
    later = parse(ENTRY, dt.date(2027, 2, 1))
    assert not later.active and [e.id for e in later.expired] == ["x"]
    assert "EXPIRED, not honoured" in later.report()[0]


@pytest.mark.parametrize(
    ("failure", "response", "dropped"),
    [
        (_failure(), _response(), True),
        (_failure(check="negative_data_rejection"), _response(), False),
        (_failure(operation="GET /v1/events/{event_id}"), _response(), False),
        (_failure(), _response(status=400), False),
        (_failure(), _response(body=b'{"type": "/problems/idempotency-key-reused"}'), False),
        (_failure(), _response(body=b"not json"), False),
    ],
)
def test_the_filter_drops_only_what_an_entry_names(failure, response, dropped):
    seen = []
    keep = failure_filter(parse(ENTRY, dt.date(2027, 1, 1)), lambda e, *_: seen.append(e.id))
    assert keep(None, failure, None, response) is not dropped
    assert seen == (["x"] if dropped else [])


def test_an_expired_entry_drops_nothing():
    keep = failure_filter(parse(ENTRY, dt.date(2028, 1, 1)))
    assert keep(None, _failure(), None, _response()) is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[allow]]\nid = "x"\n', "missing"),
        (ENTRY.replace("2027-01-31", '"2027-01-31"'), "TOML date"),
        (ENTRY.replace("2027-01-31", "2027-01-31T00:00:00"), "TOML date"),
        (ENTRY + ENTRY, "duplicate ids"),
        (ENTRY.replace('reason = "deliberate"', 'reason = "deliberate"\nowner = "me"'), "unknown"),
        (ENTRY.replace("status = 422", 'status = "422"'), "status"),
        ("[allow]\n", "array of tables"),
        ("[[allowed]]\n", "unknown top-level"),
        ("= broken", "not valid TOML"),
    ],
)
def test_malformed_files_are_rejected_with_a_reason(text, message):
    with pytest.raises(AllowlistError, match=message):
        parse(text)


def test_the_repository_allowlist_names_real_checks_and_operations():
    """Every entry names a Schemathesis check and an operation of the document."""
    load_all_checks()
    from schemathesis.checks import CHECKS

    known_checks = set(CHECKS.get_all_names())
    operations = {
        f"{method.upper()} {path}" for path, item in document()["paths"].items() for method in item
    }
    allowlist = load(ALLOWLIST_PATH)
    assert allowlist.entries
    for entry in allowlist.entries:
        assert entry.check in known_checks, entry.id
        assert entry.operation in operations, entry.id
        assert len(entry.reason) > 40, f"{entry.id}: say why the behaviour is deliberate"
