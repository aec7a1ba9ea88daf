"""The links the OpenAPI document declares, and how often a stateful run followed each one.

Schemathesis also infers links of its own (POST -> GET by matching ids, named
`X-Inferred-Link-*`), so a read that succeeded says nothing about a declared link: only a
transition whose id names the declared link, whose extracted values were applied, and whose
target answered 2xx counts as following it.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from service import openapi

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs (into the service's own document) until the node itself."""
    while "$ref" in node:
        node = openapi.resolve(node["$ref"].removeprefix("#/"))
    return node


def declared() -> list[str]:
    """Each declared link as Schemathesis names its transition: 'SOURCE -> [202] NAME -> TARGET'."""
    operations = [
        (f"{method.upper()} {path}", op)
        for path, item in openapi.document()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]
    labels = {op["operationId"]: label for label, op in operations if "operationId" in op}
    names = []
    for label, op in operations:
        for status, response in op["responses"].items():
            for name, link in resolve(response).get("links", {}).items():
                target = labels.get(link.get("operationId"), "?")
                names.append(f"{label} -> [{status}] {name} -> {target}")
    return names


def followed(transition: Any, applied: bool, status: int | None) -> bool:
    """A declared (not inferred) link whose values were used and whose target answered 2xx."""
    if transition is None or status is None or not applied:
        return False
    inferred = transition["is_inferred"] if isinstance(transition, dict) else transition.is_inferred
    return not inferred and 200 <= status < 300


def followed_in_ndjson(ndjson_path: Path) -> collections.Counter:
    """Declared links followed to a 2xx, per transition id, in an `st` NDJSON report."""
    counts: collections.Counter = collections.Counter()
    if not ndjson_path.exists():
        return counts
    with ndjson_path.open(encoding="utf-8") as lines:
        for line in lines:
            recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
            interactions = recorder.get("interactions") or {}
            for case_id, node in (recorder.get("cases") or {}).items():
                transition = node.get("transition")
                response = (interactions.get(case_id) or {}).get("response") or {}
                if followed(
                    transition, node.get("is_transition_applied"), response.get("status_code")
                ):
                    counts[transition["id"]] += 1
    return counts


def coverage(counts: collections.Counter) -> dict[str, int]:
    """How often each declared link was followed (0 for one never followed)."""
    return {name: counts.get(name, 0) for name in declared()}
