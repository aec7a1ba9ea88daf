"""The OpenAPI document is complete enough to generate from, and /openapi.json serves it."""

from __future__ import annotations

import pytest

from harness.contract.links import resolve
from service.middleware import SECURITY_HEADERS
from service.openapi import document

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
OPERATIONS = [
    (path, method, op)
    for path, item in document()["paths"].items()
    for method, op in item.items()
    if method in METHODS
]
IDS = [f"{m.upper()} {p}" for p, m, _ in OPERATIONS]
# Everything behind the in-flight limiter can be shed with 503 (service/middleware.py).
UNSHED = {"/healthz", "/readyz", "/metrics"}


# Sent on every response by service/middleware.py, so declared on every response.
COMMON_HEADERS = {"X-Request-ID", "X-Correlation-ID", *SECURITY_HEADERS}


def _resolve(node: dict) -> dict:
    return resolve(node)


def _inline(node):
    if isinstance(node, dict):
        return {k: _inline(v) for k, v in _resolve(node).items()}
    if isinstance(node, list):
        return [_inline(v) for v in node]
    return node


def _secured(op: dict) -> bool:
    return op.get("security", document()["security"]) != []


@pytest.mark.parametrize(("path", "method", "op"), OPERATIONS, ids=IDS)
def test_every_status_the_operation_can_return_is_documented(path, method, op):
    codes = set(op["responses"])
    # On every path: a malformed chunked body (400), a body over the limit (413) and a
    # transfer coding other than chunked (501), whether or not the view reads a body.
    assert {"400", "405", "413", "501"} <= codes
    if _secured(op):
        assert {"400", "401", "429", "503"} <= codes
    if path not in UNSHED:
        assert "503" in codes
    if method == "post":
        assert {"409", "415", "422"} <= codes
    assert "default" not in codes, "a default response would hide undocumented statuses"


@pytest.mark.parametrize(("path", "method", "op"), OPERATIONS, ids=IDS)
def test_errors_are_problem_documents_and_every_response_declares_the_common_headers(
    path, method, op
):
    for code, response in op["responses"].items():
        response = _resolve(response)
        assert set(response.get("headers", {})) >= COMMON_HEADERS, code
        if code.startswith(("4", "5")):
            assert list(response["content"]) == ["application/problem+json"], code


def test_the_declared_security_headers_are_the_ones_the_service_sends():
    headers = document()["components"]["headers"]
    declared = {}
    for _path, _method, op in OPERATIONS:
        for name, header in _resolve(op["responses"]["405"])["headers"].items():
            if name in SECURITY_HEADERS:
                declared[name] = _resolve(header)["schema"]["const"]
    assert declared == SECURITY_HEADERS
    assert headers["CorrelationId"]["schema"] == headers["RequestId"]["schema"]


def test_request_and_response_schemas_are_bounded():
    schemas = document()["components"]["schemas"]
    for name in ("Event", "EventBatch", "EventResult", "EventBatchResult", "EventStatus"):
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["EventBatch"]["properties"]["events"]["maxItems"] == 100
    event = schemas["Event"]["properties"]
    assert event["user_id"]["maxLength"] and event["occurred_at"]["maxLength"]
    assert event["item_id"]["minimum"] == 1 and event["item_id"]["maximum"]


def test_api_key_scheme_and_links_are_declared():
    doc = document()
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        **doc["components"]["securitySchemes"]["apiKey"],
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    links = doc["paths"]["/v1/events"]["post"]["responses"]["202"]["links"]
    assert {link["operationId"] for link in links.values()} == {"getEvent", "getRecommendations"}


def test_examples_validate_against_their_schemas():
    """Examples are the first cases Schemathesis sends; a wrong one would mislead it and users."""
    import jsonschema_rs

    checked = 0
    for _path, _method, op in OPERATIONS:
        bodies = [op.get("requestBody", {})] + [_resolve(r) for r in op["responses"].values()]
        for body in bodies:
            for media in body.get("content", {}).values():
                if "example" in media:
                    schema = _inline(media["schema"])
                    # The validator the service itself uses, formats asserted.
                    jsonschema_rs.Draft202012Validator(schema, validate_formats=True).validate(
                        media["example"]
                    )
                    checked += 1
    assert checked >= 6


def test_the_served_document_is_the_file(contract_app):
    """GET /openapi.json (skipped by Schemathesis: it is the schema's own URL) serves the file."""
    client = contract_app.test_client()
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == document()
    assert response.headers["X-Request-ID"]
    not_allowed = client.post("/openapi.json")
    assert not_allowed.status_code == 405 and "GET" in not_allowed.headers["Allow"]
    assert not_allowed.mimetype == "application/problem+json"


LINKS = [
    (op, _resolve(response), name, link)
    for _path, _method, op in OPERATIONS
    for response in op["responses"].values()
    for name, link in _resolve(response).get("links", {}).items()
]


def _pointer(node, pointer: str):
    for part in pointer.removeprefix("/").split("/") if pointer else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _evaluate(expression: str, op: dict, response: dict):
    """A runtime expression evaluated on the operation's own request and response examples."""
    source, _, pointer = expression.partition("#")
    if source == "$response.body":
        return _pointer(response["content"]["application/json"]["example"], pointer)
    if source == "$request.body":
        return _pointer(op["requestBody"]["content"]["application/json"]["example"], pointer)
    raise AssertionError(f"{expression}: teach this test the expression before using it")


@pytest.mark.parametrize(("op", "response", "name", "link"), LINKS, ids=[x[2] for x in LINKS])
def test_link_expressions_resolve_on_the_examples_to_valid_parameters(op, response, name, link):
    """A wrong pointer fails here, not only as a link the stateful run never follows."""
    import jsonschema_rs

    target = next(t for _p, _m, t in OPERATIONS if t["operationId"] == link["operationId"])
    parameters = {p["name"]: p for p in map(_resolve, target.get("parameters", []))}
    assert link["parameters"], name
    for parameter, expression in link["parameters"].items():
        assert parameter in parameters, f"{name}: {target['operationId']} has no {parameter}"
        try:
            value = _evaluate(expression, op, response)
        except (KeyError, IndexError, TypeError):
            raise AssertionError(f"{name}: {expression} finds nothing in the examples") from None
        schema = _inline(parameters[parameter]["schema"])
        jsonschema_rs.Draft202012Validator(schema, validate_formats=True).validate(value)


def test_the_api_page_lists_the_documented_error_statuses():
    """docs/api.md's endpoint table names, per operation, exactly the document's 4xx and 5xx."""
    import re

    from harness.contract.paths import ROOT

    listed = {}
    for row in (ROOT / "docs" / "api.md").read_text(encoding="utf-8").splitlines():
        found = re.match(r"\| `(GET|POST) (/[^ `?]*)[^|]*\|[^|]*\|(.*)\|$", row)
        if found:
            method, path, errors = found.groups()
            listed[f"{method} {path}"] = set(re.findall(r"\b[45]\d\d\b", errors))
    for path, method, op in OPERATIONS:
        documented = {code for code in op["responses"] if code[0] in "45"}
        assert listed.get(f"{method.upper()} {path}") == documented, (method, path)
