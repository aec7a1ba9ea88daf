"""Connection arguments and the PREPARE that rides along with a statement's first use."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from service.db.connect import connect_kwargs, with_prepare
from service.settings import Settings

NO_NEGOTIATION = {"sslmode": "disable", "gssencmode": "disable"}
NO_GSS = {"gssencmode": "disable"}


def _transport(url: str, environ: dict[str, str] | None = None) -> dict[str, object]:
    settings = dataclasses.replace(Settings.from_env({}), database_url=url)
    kwargs = connect_kwargs(settings, "api", environ or {})
    return {k: kwargs[k] for k in NO_NEGOTIATION if k in kwargs}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://reco@127.0.0.1:5432/reco",
        "postgresql://reco@[::1]:5432/reco",
        "postgresql://reco@localhost/reco",
        "postgresql:///reco?host=/var/run/postgresql",
        "dbname=reco",
    ],
)
def test_a_loopback_or_socket_server_gets_no_encryption_negotiation(url):
    assert _transport(url) == NO_NEGOTIATION


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("postgresql://reco@db.internal:5432/reco", {}, {}),
        ("postgresql://reco@127.0.0.1,db.internal/reco", {}, {}),
        ("postgresql://reco@localhost/reco?hostaddr=10.0.0.5", {}, {}),
        ("postgresql://reco@127.0.0.1/reco?sslmode=require", {}, NO_GSS),
        ("postgresql://reco@127.0.0.1/reco", {"PGSSLMODE": "verify-full"}, NO_GSS),
        ("dbname=reco", {"PGHOST": "db.internal"}, {}),
    ],
)
def test_a_remote_server_or_an_explicit_mode_is_left_to_libpq(url, environ, expected):
    assert _transport(url, environ) == expected


def _cursor(prepared: set[str]) -> SimpleNamespace:
    return SimpleNamespace(connection=SimpleNamespace(prepared=prepared))


def test_the_first_use_carries_the_prepare_in_the_same_round_trip():
    cur = _cursor(set())
    first = with_prepare(cur, "q", "PREPARE q AS SELECT $1\n", "EXECUTE q (%(x)s)")
    assert first == "PREPARE q AS SELECT $1;EXECUTE q (%(x)s)"
    assert with_prepare(cur, "q", "PREPARE q AS SELECT $1", "EXECUTE q (%(x)s)") == (
        "EXECUTE q (%(x)s)"
    )


def test_a_leading_begin_stays_first():
    sql = with_prepare(_cursor(set()), "q", "PREPARE q AS SELECT 1", "BEGIN; EXECUTE q", "BEGIN;")
    assert sql == "BEGIN;PREPARE q AS SELECT 1; EXECUTE q"
