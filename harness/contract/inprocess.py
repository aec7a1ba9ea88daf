"""Load the contract in-process: the served OpenAPI document of a Flask app, with the allow-list."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from harness.contract.allowlist import Allowlist, Entry, load
from harness.contract.config import in_process_config
from harness.contract.hooks import failure_filter
from harness.contract.paths import ALLOWLIST_PATH
from harness.contract.steering import install as install_steering


@dataclasses.dataclass
class Dropped:
    """Allow-listed failures seen in this process, for reporting and tests."""

    entries: list[str] = dataclasses.field(default_factory=list)

    def __call__(self, entry: Entry, _failure: Any, _case: Any, _response: Any) -> None:
        self.entries.append(entry.id)


def document_app():
    """An app that serves the document; it never touches its (unconfigured) database."""
    from service.app import create_app
    from service.settings import Settings

    # No I/O happens at create_app time, so this is safe at test-collection time.
    return create_app(Settings(environment="test", log_level="WARNING"))


def load_schema(
    api_key: str,
    app: Any = None,
    allowlist_path: Path = ALLOWLIST_PATH,
    today: dt.date | None = None,
) -> tuple[Any, Allowlist, Dropped]:
    """Load the schema from ``/openapi.json`` via from_wsgi; install the allow-list and steering.

    Tests pass their own app to each call (``case.call_and_validate(app=...)``) so one schema,
    built at collection time, can serve apps wired to per-module databases.
    """
    import schemathesis

    allowlist = load(allowlist_path, today)
    dropped = Dropped()
    schema = schemathesis.openapi.from_wsgi(
        "/openapi.json", app or document_app(), config=in_process_config(api_key)
    )
    schema.hook(failure_filter(allowlist, dropped))
    install_steering(schema.hook)
    return schema, allowlist, dropped
