"""Where the relay's claims start: above the last full claim, from the start every eighth."""

from __future__ import annotations

import pytest

from service.settings import Settings
from workers import outbox
from workers.relay import HINTED_CLAIMS, Relay


def _rows(*ids: int) -> list[outbox.OutboxRow]:
    return [outbox.OutboxRow(i, "e", "t", "k", b"", {}, 0) for i in ids]


@pytest.fixture
def relay():
    made = Relay(Settings.from_env({}))
    yield made
    made._db.shutdown(wait=False)


def test_full_claims_start_above_the_last_one_then_every_eighth_from_the_start(relay):
    starts = []
    last = 0
    for _ in range(2 * (HINTED_CLAIMS + 1)):
        after = relay._claim_from()
        starts.append(after)
        last += 2
        relay._claimed(_rows(last - 1, last), 2, after)
        assert relay.short is False
    assert starts[0] == 0 and starts[HINTED_CLAIMS + 1] == 0
    assert all(starts[i] for i in range(1, HINTED_CLAIMS + 1))
    assert starts[1] == 2  # the highest id of the claim before


def test_a_short_claim_from_the_start_is_short_and_the_next_starts_from_the_start(relay):
    relay._claimed(_rows(1), 2, 0)
    assert relay.short is True and relay._claim_from() == 0


def test_a_short_claim_above_an_id_says_nothing_about_the_rows_below(relay):
    relay._claimed(_rows(1, 2), 2, 0)
    after = relay._claim_from()
    assert after == 2
    relay._claimed(_rows(3), 2, after)
    # Not "short": rows below may be claimable, so the relay claims again, from the start.
    assert relay.short is False and relay._claim_from() == 0
