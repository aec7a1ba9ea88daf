"""The contract allow-list: deliberate findings, each with a reason and an expiry date."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REQUIRED = ("id", "check", "operation", "reason", "expires")
OPTIONAL = ("status", "problem_type")


class AllowlistError(ValueError):
    """The allow-list file is missing, unreadable or has a malformed entry."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One deliberate finding: which check, on which operation, answering what."""

    id: str
    check: str
    operation: str
    reason: str
    expires: dt.date
    status: tuple[int, ...] = ()
    problem_type: str | None = None

    def expired(self, today: dt.date) -> bool:
        """An entry is honoured up to and including its expiry date."""
        return today > self.expires

    def matches(self, checks: Iterable[str], operation: str | None, status: int, body: Any) -> bool:
        """Tell whether a failure (its checks, operation label, response) is this finding."""
        if self.check not in set(checks) or operation != self.operation:
            return False
        if self.status and status not in self.status:
            return False
        if self.problem_type is not None:
            return isinstance(body, dict) and body.get("type") == self.problem_type
        return True

    def describe(self, today: dt.date) -> str:
        state = "EXPIRED, not honoured" if self.expired(today) else "honoured"
        statuses = ",".join(map(str, self.status)) or "any status"
        narrowing = f" {self.problem_type}" if self.problem_type else ""
        return (
            f"{self.id}: {self.check} on {self.operation} ({statuses}{narrowing}) "
            f"expires {self.expires.isoformat()} [{state}] - {self.reason}"
        )


@dataclasses.dataclass(frozen=True)
class Allowlist:
    """All entries of one file; only the unexpired ones are honoured."""

    entries: tuple[Entry, ...]
    today: dt.date

    @property
    def active(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if not e.expired(self.today))

    @property
    def expired(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.expired(self.today))

    def match(
        self, checks: Iterable[str], operation: str | None, status: int, body: Any
    ) -> Entry | None:
        """The first honoured entry covering this failure, if any."""
        checks = tuple(checks)
        for entry in self.active:
            if entry.matches(checks, operation, status, body):
                return entry
        return None

    def report(self) -> list[str]:
        """One line per entry, for the command to print."""
        return [e.describe(self.today) for e in self.entries]


def _entry(raw: Any, index: int) -> Entry:
    where = f"entry {index + 1}"
    if not isinstance(raw, dict):
        raise AllowlistError(f"{where}: expected a table")
    missing = [k for k in REQUIRED if k not in raw]
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise AllowlistError(f"{where}: missing {missing or '-'}, unknown keys {unknown or '-'}")
    expires = raw["expires"]
    # A TOML local date parses to date; a datetime would make "expires" ambiguous.
    if not isinstance(expires, dt.date) or isinstance(expires, dt.datetime):
        raise AllowlistError(f"{where} ({raw['id']}): expires must be a TOML date (2027-01-31)")
    status = raw.get("status", [])
    status = [status] if isinstance(status, int) else status
    if not isinstance(status, list) or not all(isinstance(s, int) for s in status):
        raise AllowlistError(f"{where} ({raw['id']}): status must be an integer or a list of them")
    for key in ("id", "check", "operation", "reason"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise AllowlistError(f"{where}: {key} must be a non-empty string")
    return Entry(
        id=raw["id"],
        check=raw["check"],
        operation=raw["operation"],
        reason=" ".join(raw["reason"].split()),
        expires=expires,
        status=tuple(status),
        problem_type=raw.get("problem_type"),
    )


def parse(text: str, today: dt.date | None = None) -> Allowlist:
    """Parse allow-list TOML (a list of [[allow]] tables)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AllowlistError(f"not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"allow"})
    if unknown:
        raise AllowlistError(f"unknown top-level keys {unknown}; entries go in [[allow]] tables")
    raw_entries = data.get("allow", [])
    if not isinstance(raw_entries, list):
        raise AllowlistError("'allow' must be an array of tables ([[allow]])")
    entries = tuple(_entry(raw, i) for i, raw in enumerate(raw_entries))
    ids = [e.id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise AllowlistError(f"duplicate ids {duplicates}")
    return Allowlist(entries, today or dt.date.today())


def load(path: Path, today: dt.date | None = None) -> Allowlist:
    """Read and validate the allow-list at ``path``; a missing file is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AllowlistError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse(text, today)
    except AllowlistError as exc:
        raise AllowlistError(f"{path}: {exc}") from None


def response_json(response: Any) -> Any:
    """The JSON body of a Schemathesis response, or None."""
    try:
        return json.loads(response.content or b"null")
    except (ValueError, TypeError, AttributeError):
        return None
