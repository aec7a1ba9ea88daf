"""The contract tier: Schemathesis against the OpenAPI document, with an expiring allow-list."""
