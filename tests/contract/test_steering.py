"""Valid generated event batches reach the 202 path: item_id and occurred_at are steered."""

from __future__ import annotations

import collections
import re

import hypothesis
import psycopg2
import pytest
from schemathesis import GenerationMode

from harness.contract.inprocess import load_schema
from harness.contract.probe import generate_only, operation
from harness.contract.steering import EVENTS, SEEDED_ITEMS, in_catalogue, in_the_past, keyed_to
from harness.pytest_plugins.service import API_KEY

schema, _allowlist, _dropped = load_schema(API_KEY)


def positive_statuses(app, max_examples: int = 60) -> collections.Counter:
    """Statuses the app answers to generated valid POST /v1/events requests."""
    statuses: collections.Counter = collections.Counter()

    @generate_only(max_examples)
    @hypothesis.given(case=operation(schema, EVENTS).as_strategy(GenerationMode.POSITIVE))
    def run(case) -> None:
        response = case.call(app=app)
        body = response.json() if response.status_code != 202 else {}
        statuses[(response.status_code, body.get("type"))] += 1

    run()
    return statuses


def test_most_valid_generated_batches_are_accepted(contract_app):
    """Without steering nearly all are 422 unknown-item or event-in-future."""
    statuses = positive_statuses(contract_app)
    accepted = sum(n for (status, _), n in statuses.items() if status == 202)
    assert accepted / sum(statuses.values()) >= 0.8, statuses


def test_the_catalogue_is_the_seeded_one(contract_database_url):
    conn = psycopg2.connect(contract_database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT min(item_id), max(item_id), count(*) FROM items")
            assert cur.fetchone() == (1, SEEDED_ITEMS, SEEDED_ITEMS)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("drawn", "steered"),
    [(1, 1), (5000, 5000), (5001, 1), (2147483647, 2147483647 % 5000), (17.0, 17.0)],
)
def test_item_ids_fold_into_the_catalogue_keeping_their_type(drawn, steered):
    assert in_catalogue(drawn) == steered and type(in_catalogue(drawn)) is type(drawn)
    assert in_catalogue(True) is True and in_catalogue("7") == "7"


@pytest.mark.parametrize(
    ("drawn", "steered"),
    [
        ("2019-12-31T23:59:59Z", "2019-12-31T23:59:59Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59.5+14:00", "1987-12-31T23:59:59.5+14:00"),
        ("2400-02-29T00:00:00z", "1972-02-29T00:00:00z"),
        ("2028-12-31T23:59:60Z", "1984-12-31T23:59:60Z"),
    ],
)
def test_future_years_move_into_the_past_keeping_the_rest(drawn, steered):
    assert in_the_past(drawn) == steered


def test_keys_are_suffixed_with_a_digest_of_the_body_as_drawn():
    body = {"events": []}
    bare, quoted = keyed_to("k", body), keyed_to('"k"', body)
    assert re.fullmatch(r"k\.[0-9a-f]{16}", bare) and quoted == f'"{bare}"'
    assert keyed_to("k", {"events": [1]}) != bare
    assert keyed_to("x" * 255, body) == "x" * 255  # no room left: kept as drawn
