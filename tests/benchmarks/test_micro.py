"""Micro-benchmarks of the hot code (pytest-benchmark), judged against a saved baseline.

Save a baseline for this machine and interpreter (.benchmarks/<machine id>/NNNN_*.json)::

    pytest tests/benchmarks/test_micro.py --benchmark-enable --benchmark-autosave

then compare a later run with it; each benchmark fails beyond its own threshold in
guardrails.toml (profile ``bench-micro``), above a noise floor::

    pytest tests/benchmarks/test_micro.py --benchmark-enable --benchmark-compare

Without ``--benchmark-enable`` every benchmark runs once, as a smoke test of the code.
The functions are called through their modules (``ranking.rank``), so a patched or slowed
function is what gets measured.
"""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest

from harness.bench import workers as bench
from service import events, idempotency, openapi, ranking
from service.db.connect import connect
from service.settings import Settings
from workers import outbox

POOL = 200  # the service's CANDIDATE_POOL
LIMIT = 20  # the default page of recommendations
PARAMS = "paths/~1v1~1users~1{user_id}~1recommendations/get/parameters"
CLAIM_ROUNDS = 200


@pytest.fixture(scope="module")
def pool() -> list[ranking.Candidate]:
    """200 popular items over 20 categories, popularity falling like a real catalogue."""
    return [ranking.Candidate(i, i % 20 or None, 1000.0 / i) for i in range(1, POOL + 1)]


@pytest.fixture(scope="module")
def event_body() -> dict:
    """A POST /v1/events body with one event, as the load profiles send it."""
    return {
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "user_id": "user-42",
                "item_id": 1234,
                "kind": "click",
                "occurred_at": "2026-11-29T10:00:00+00:00",
            }
        ]
    }


@pytest.fixture(scope="module")
def event() -> events.InteractionRecorded:
    return events.InteractionRecorded(
        str(uuid.uuid4()), "client-a", "user-42", 1234, "click", dt.datetime.now(dt.UTC).isoformat()
    )


def test_rank_pool_of_200(benchmark, pool):
    affinity = {c: float(c) for c in range(1, 8)}
    seen = {c.item_id for c in pool[::10]}
    ranked = benchmark(ranking.rank, ranking.RankingPool(pool), affinity, seen, LIMIT)
    assert len(ranked) == LIMIT


def test_validate_recommendations_request(benchmark):
    def validate() -> None:
        openapi.validate("user-42", openapi.parameter_schema("UserId"), "path", 400)
        openapi.validate(LIMIT, f"{PARAMS}/1/schema", "query parameter limit", 400)
        openapi.validate("home", f"{PARAMS}/2/schema", "query parameter surface", 400)

    validate()  # build the cached validators first: calibration must not time that
    benchmark(validate)


def test_validate_event_batch(benchmark, event_body):
    openapi.validate(event_body, "components/schemas/EventBatch")  # build the validator
    benchmark(openapi.validate, event_body, "components/schemas/EventBatch")


def test_encode_recommendations_20(benchmark, pool):
    items = ranking.rank(ranking.RankingPool(pool), {}, set(), LIMIT)

    def encode() -> bytes:
        # Built as the handler builds it: orjson writes the Ranked dataclasses itself.
        return orjson.dumps(
            {"user_id": "user-42", "surface": "home", "fallback": False, "items": items}
        )

    body = benchmark(encode)
    assert len(orjson.loads(body)["items"]) == LIMIT


def test_fingerprint_event_batch(benchmark, event_body):
    digest = benchmark(idempotency.fingerprint, "POST", "/v1/events", event_body)
    assert len(digest) == 64


def test_event_encode(benchmark, event):
    benchmark(event.to_payload)


def test_event_decode(benchmark, event):
    decoded = benchmark(events.decode, event.TYPE, event.to_payload())
    assert decoded == event


def test_outbox_claim_mark_round(benchmark, database_url):
    """One relay round trip: mark the previous batch published, COMMIT, BEGIN, claim the next."""
    settings = Settings.from_env({"RECO_ENV": "test", "RECO_DATABASE_URL": database_url})
    batch = settings.relay_batch_size
    rounds = 1 if benchmark.disabled else CLAIM_ROUNDS
    # Every round consumes a batch; seed enough for the rounds, the warm-up and a spare.
    bench.seed_outbox(database_url, bench.make_events(batch * (rounds + 12)))
    conn = connect(settings, "relay")
    conn.autocommit = True  # the relay spells its transactions out (workers/outbox.py)
    try:
        with conn.cursor() as cur:
            claimed = [outbox.claim(cur, batch)]

            def round_trip() -> None:
                ids = [row.id for row in claimed[0]]
                claimed[0] = outbox.settle(cur, ids, {}, claim_limit=batch)

            benchmark.pedantic(round_trip, rounds=rounds, warmup_rounds=0 if rounds == 1 else 10)
            assert len(claimed[0]) == batch
            outbox.finish(cur, commit=False)
    finally:
        conn.close()
    benchmark.extra_info["batch"] = batch
