"""Idempotency records, scoped per client and expiring on database time."""

from __future__ import annotations

TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%(lock_key)s)"

FIND = """
SELECT fingerprint, response_status, response_body, expires_at > now() AS live
FROM idempotency_keys
WHERE client_id = %(client_id)s AND key = %(key)s
"""

DELETE_EXPIRED_ONE = """
DELETE FROM idempotency_keys
WHERE client_id = %(client_id)s AND key = %(key)s AND expires_at <= now()
"""

INSERT = """
INSERT INTO idempotency_keys
    (client_id, key, fingerprint, response_status, response_body, expires_at)
VALUES (%(client_id)s, %(key)s, %(fingerprint)s, %(status)s, %(body)s,
        now() + make_interval(secs => %(ttl_s)s))
"""

PURGE_EXPIRED = """
DELETE FROM idempotency_keys
WHERE ctid IN (SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT %(limit)s)
"""


def try_lock(cur, lock_key: int) -> bool:
    """Take the transaction-scoped lock for a key; False when another request holds it."""
    cur.execute(TRY_LOCK, {"lock_key": lock_key})
    return bool(cur.fetchone()[0])


def find(cur, client_id: str, key: str) -> tuple[str, int, bytes] | None:
    """Return (fingerprint, status, body) of a live record; drop an expired one."""
    cur.execute(FIND, {"client_id": client_id, "key": key})
    row = cur.fetchone()
    if row is None:
        return None
    if not row[3]:
        cur.execute(DELETE_EXPIRED_ONE, {"client_id": client_id, "key": key})
        return None
    return row[0], int(row[1]), bytes(row[2])


def store(
    cur, client_id: str, key: str, fingerprint: str, status: int, body: bytes, ttl_s: int
) -> None:
    """Record the response to replay for this key."""
    cur.execute(
        INSERT,
        {
            "client_id": client_id,
            "key": key,
            "fingerprint": fingerprint,
            "status": status,
            "body": body,
            "ttl_s": ttl_s,
        },
    )
