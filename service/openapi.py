"""The OpenAPI document (service/openapi.yaml) and JSON Schema validators built from it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from service.problems import ApiProblem

DOCUMENT_PATH = Path(__file__).with_name("openapi.yaml")


@functools.lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """Load the OpenAPI document once per process."""
    return yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))


@functools.cache
def validator(pointer: str) -> Draft202012Validator:
    """A validator for the schema at a JSON pointer such as 'components/schemas/EventBatch'."""
    doc = document()
    registry = Registry().with_resource("urn:openapi", Resource.opaque(doc))
    return Draft202012Validator(
        {"$ref": f"urn:openapi#/{pointer}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p) for p in path) if path else ""


def validate(value: Any, pointer: str, where: str = "body", status: int = 422) -> None:
    """Raise a 422 (or ``status``) problem listing every violation with its JSON pointer."""
    errors = sorted(validator(pointer).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        raise ApiProblem(
            status,
            "validation-error",
            f"the {where} does not match the schema",
            errors=[
                {"pointer": _pointer(e.absolute_path), "detail": e.message[:300]}
                for e in errors[:20]
            ],
        )


def parameter_schema(name: str) -> str:
    """The pointer of a shared parameter's schema."""
    return f"components/parameters/{name}/schema"


def version() -> str:
    return str(document()["info"]["version"])
