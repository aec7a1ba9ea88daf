"""The OpenAPI document (service/openapi.yaml) and JSON Schema validators built from it."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

from service.problems import ApiProblem

DOCUMENT_PATH = Path(__file__).with_name("openapi.yaml")
MAX_ERRORS = 20  # the Problem schema's errors.maxItems


@functools.lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """Load the OpenAPI document once per process."""
    return yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))


def resolve(pointer: str) -> Any:
    """The node at a JSON pointer into the document (without its leading "#/")."""
    node: Any = document()
    for part in pointer.split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _inline_refs(node: Any) -> Any:
    """Replace every local $ref with its target (the document has no recursive schemas)."""
    if isinstance(node, dict):
        if set(node) == {"$ref"} and node["$ref"].startswith("#/"):
            return _inline_refs(resolve(node["$ref"][2:]))
        return {key: _inline_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(value) for value in node]
    return node


@functools.cache
def validator(pointer: str) -> Any:
    """A validator for the schema at a JSON pointer such as 'components/schemas/EventBatch'."""
    # jsonschema-rs checks a valid event batch in about 1 µs where the pure-Python library
    # takes about 80; refs are inlined once so no request pays for reference resolution.
    return jsonschema_rs.Draft202012Validator(_inline_refs(resolve(pointer)), validate_formats=True)


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p) for p in path) if path else ""


def validate(
    value: Any, pointer: str, where: str = "body", status: int = 422, at: str = ""
) -> None:
    """Raise a 422 (or ``status``) problem listing every violation with its JSON pointer.

    ``at`` prefixes each pointer: a parameter's errors point at ``/<its name>``, as the
    refusals of unknown or repeated query parameters do, not at the empty pointer.
    """
    checker = validator(pointer)
    if checker.is_valid(value):
        return
    # Only MAX_ERRORS are reported, so only that many are sorted. jsonschema-rs builds every
    # error anyway: what multiplies them (an over-long array) is refused before this call.
    found = itertools.islice(checker.iter_errors(value), MAX_ERRORS)
    errors = sorted(found, key=lambda e: [str(p) for p in e.instance_path])
    raise ApiProblem(
        status,
        "validation-error",
        f"the {where} does not match the schema",
        errors=[
            {"pointer": at + _pointer(e.instance_path), "detail": e.message[:300]} for e in errors
        ],
    )


@functools.cache
def keyword(pointer: str, name: str) -> Any:
    """A keyword of the schema at ``pointer``, e.g. an array's maxItems for a check run first."""
    return resolve(pointer)[name]


def parameter_schema(name: str) -> str:
    """The pointer of a shared parameter's schema."""
    return f"components/parameters/{name}/schema"


def version() -> str:
    return str(document()["info"]["version"])
