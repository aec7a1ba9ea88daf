"""A Schemathesis `filter_failure` hook that drops only allow-listed, unexpired findings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.contract.allowlist import Allowlist, Entry, response_json

OnDrop = Callable[[Entry, Any, Any, Any], None]


def failure_filter(allowlist: Allowlist, on_drop: OnDrop | None = None) -> Callable[..., bool]:
    """Build the hook; it returns False (drop) for a failure an honoured entry covers."""

    def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
        entry = allowlist.match(
            getattr(failure, "checks", ()),
            getattr(failure, "operation", None),
            response.status_code,
            response_json(response),
        )
        if entry is None:
            return True
        if on_drop is not None:
            on_drop(entry, failure, case, response)
        return False

    return filter_failure
