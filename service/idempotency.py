"""Idempotency-Key parsing and request fingerprints (draft-ietf-httpapi-idempotency-key-header)."""

from __future__ import annotations

import hashlib
import re

import orjson

from service.problems import ApiProblem

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_TOKEN = re.compile(r"[A-Za-z0-9._:\-]{1,255}")


def parse_key(value: str | None) -> str:
    """Return the key from the header's value, or raise 400 when missing or malformed."""
    if value is None:
        raise ApiProblem(400, "idempotency-key-missing", f"the {HEADER} header is required")
    if "," in value:  # a server joins repeated header lines with commas; keys have none
        raise ApiProblem(400, "idempotency-key-invalid", f"send exactly one {HEADER} header")
    raw = value.strip()
    # An RFC 8941 sf-string is quoted; bare tokens are accepted too for convenience.
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = raw[1:-1]
    if not _TOKEN.fullmatch(raw):
        raise ApiProblem(
            400,
            "idempotency-key-invalid",
            f"{HEADER} must be a quoted string of 1..255 characters from [A-Za-z0-9._:-]",
        )
    return raw


def fingerprint(method: str, path: str, body: object) -> str:
    """SHA-256 over the method, path and canonical JSON (sorted keys, no whitespace)."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256()
    digest.update(method.encode())
    digest.update(b"\n")
    digest.update(path.encode())
    digest.update(b"\n")
    digest.update(canonical)
    return digest.hexdigest()


def lock_key(client_id: str, key: str) -> int:
    """A signed 64-bit advisory-lock key for (client, key)."""
    raw = hashlib.blake2b(f"{client_id}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big", signed=True)
