"""Every operation, positive and negative cases, every Schemathesis check, in-process."""

from __future__ import annotations

import pytest

from harness.contract.inprocess import load_schema
from harness.pytest_plugins.service import API_KEY

schema, allowlist, dropped = load_schema(API_KEY)


@schema.parametrize()
def test_operation_keeps_the_contract(case, contract_app):
    """Generated requests (examples, coverage, fuzzing) get documented, correct responses."""
    case.call_and_validate(app=contract_app)


def test_every_documented_operation_is_tested():
    """The document lists the operations the tier is expected to cover."""
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert labels >= {
        "GET /v1/users/{user_id}/recommendations",
        "POST /v1/events",
        "GET /v1/events/{event_id}",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    }


def test_each_operation_is_a_test_of_its_own(request):
    """One node id per operation: selecting, re-running and reporting an operation need it."""
    ids = [
        item.nodeid
        for item in request.session.items
        if getattr(item, "originalname", "").startswith("test_operation_keeps_the_contract")
    ]
    if not ids:
        pytest.skip("the operations' tests were not collected in this run")
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert len(ids) == len(set(ids)) == len(labels), ids
    assert all(any(f"[{label}]" in i for i in ids) for label in labels), ids
