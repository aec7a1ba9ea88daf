"""The contract tier's fixtures live in harness/contract/fixtures.py."""

from harness.contract.fixtures import contract_app, contract_database_url  # noqa: F401
