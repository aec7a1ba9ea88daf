"""Every operation, positive and negative cases, every Schemathesis check, in-process."""

from __future__ import annotations

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
