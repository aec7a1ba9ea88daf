"""Pure service logic: ranking, strict JSON, idempotency keys, breaker, limits, problems."""

from __future__ import annotations

import pytest

from service import idempotency, strict_json
from service.breaker import CircuitBreaker, CircuitOpen
from service.popular_cache import PopularPool
from service.problems import ApiProblem, instance_of
from service.ranking import Candidate, RankingPool, rank, rank_popular
from service.shedding import InflightLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rank_orders_by_score_with_affinity_and_seen():
    pool = [Candidate(1, 10, 100), Candidate(2, 20, 50), Candidate(3, 10, 90)]
    ranked = rank(RankingPool(pool), affinity={20: 3.0}, seen={3}, limit=3)
    assert [r.item_id for r in ranked] == [2, 1, 3]
    assert [r.reason for r in ranked] == ["affinity", "popular", "seen"]


def test_rank_is_deterministic_on_ties_and_honours_limit():
    pool = RankingPool([Candidate(i, 1, 10) for i in (5, 3, 4)])
    assert [r.item_id for r in rank(pool, {}, {5}, 2)] == [3, 4]
    assert rank(RankingPool([]), {1: 1.0}, {1}, 5) == []


def test_recommendation_defaults_are_the_documents():
    """The handler answers a request without a query string with the documented defaults."""
    from service import openapi
    from service.api import recommendations

    get = openapi.document()["paths"]["/v1/users/{user_id}/recommendations"]["get"]
    defaults = {p["name"]: p["schema"]["default"] for p in get["parameters"] if "name" in p}
    assert (
        defaults["limit"],
        defaults["surface"],
    ) == (recommendations.DEFAULT_LIMIT, recommendations.DEFAULT_SURFACE)


def test_history_free_ranking_equals_the_general_one():
    pool = [Candidate(i, i % 3, 100 / i) for i in range(1, 50)]
    assert rank_popular(pool)[:20] == rank(RankingPool(pool), {}, set(), 20)


def test_popular_pool_cache_expires():
    clock = Clock()
    cache = PopularPool(ttl_s=1.0, clock=clock)
    assert not cache.fresh()
    cache.store([Candidate(1, 1, 5.0)])
    assert cache.fresh() and cache.get().popular[0].item_id == 1
    clock.now = 1.5
    assert not cache.fresh()
    assert not PopularPool(0).fresh()


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b'{"a":1,"a":2}',
        b'"\\ud800"',
        b'"\\u0000"',
        b"[" * 100 + b"]" * 100,
        b"1" * 30,
        b"\xff",
        b"{",
        b"",
        b"1e999",
    ],
)
def test_strict_json_rejects(raw):
    with pytest.raises(strict_json.JsonRejected):
        strict_json.loads(raw)


def test_strict_json_accepts_ordinary_documents():
    assert strict_json.loads(b'{"a": [1, 2.5, "x\\u00e9", null, true]}') == {
        "a": [1, 2.5, "xé", None, True]
    }


def test_strict_json_accepts_whitespace_however_long_between_leading_brackets():
    body = b'{"events": [{"a": 1}]}'
    assert strict_json.loads(b"\n" * 50 + body) == {"events": [{"a": 1}]}
    assert strict_json.loads(b"{" + b" " * 40 + body[1:]) == {"events": [{"a": 1}]}
    assert strict_json.loads(b"[" * 16 + b"]" * 16) == [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]
    with pytest.raises(strict_json.JsonRejected, match="nesting"):
        strict_json.loads(b"[ " * 17 + b"]" * 17)


@pytest.mark.parametrize("value", ['"abc-123"', "abc-123", '"' + "k" * 255 + '"'])
def test_idempotency_key_accepts(value):
    assert idempotency.parse_key(value).startswith(("abc", "k"))


# '"a", "b"' is how two Idempotency-Key lines reach the app: the server joins them.
@pytest.mark.parametrize("value", [None, '""', '"a b"', '"' + "k" * 256 + '"', '"a", "b"', "a,b"])
def test_idempotency_key_rejects(value):
    with pytest.raises(ApiProblem) as err:
        idempotency.parse_key(value)
    assert err.value.status == 400


def test_fingerprint_is_canonical_and_scoped_by_path():
    a = idempotency.fingerprint("POST", "/v1/events", {"b": 1, "a": [1, 2]})
    b = idempotency.fingerprint("POST", "/v1/events", {"a": [1, 2], "b": 1})
    assert a == b
    assert a != idempotency.fingerprint("POST", "/v1/other", {"a": [1, 2], "b": 1})
    assert idempotency.lock_key("c", "k") != idempotency.lock_key("d", "k")


def test_breaker_opens_half_opens_and_closes():
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, reset_s=5, clock=clock)
    breaker.before_call()
    breaker.failure()
    breaker.before_call()
    breaker.failure()
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    assert breaker.retry_after_s() == 5
    clock.now = 5.1
    breaker.before_call()  # the single trial
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    breaker.success()
    assert breaker.state == "closed"


def test_failed_trial_reopens_the_breaker():
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, reset_s=1, clock=clock)
    breaker.failure()
    clock.now = 2
    breaker.before_call()
    breaker.failure()
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_a_failed_trial_tells_that_the_breaker_opened_again():
    clock, changes = Clock(), []
    breaker = CircuitBreaker(threshold=1, reset_s=1, clock=clock, on_change=changes.append)
    breaker.failure()
    assert breaker.open_until() == 1
    clock.now = 2
    assert breaker.open_until() is None  # half open: the next call is a trial
    assert breaker.before_call() is True
    breaker.failure()
    assert changes == ["open", "open"] and breaker.open_until() == 3


def test_only_the_trial_ending_neutrally_lets_another_trial_through():
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, reset_s=1, clock=clock)
    assert breaker.before_call() is False  # admitted while closed
    breaker.failure()
    clock.now = 2
    assert breaker.before_call() is True  # the trial
    breaker.neutral(False)  # the earlier call ends with a pool timeout
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # still one trial at a time
    breaker.neutral(True)
    assert breaker.before_call() is True


def test_inflight_limiter_bounds_concurrency():
    limiter = InflightLimiter(2)
    assert limiter.try_enter() and limiter.try_enter()
    assert not limiter.try_enter()
    limiter.leave()
    assert limiter.try_enter()


def test_token_bucket_refills_over_time():
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=2, clock=clock)
    assert bucket.allow("a") and bucket.allow("a")
    assert not bucket.allow("a")
    assert bucket.allow("b")
    clock.now = 1.0
    assert bucket.allow("a")
    assert TokenBucket(0, 0, clock).allow("x")


def test_token_bucket_takes_a_batch_from_every_key_or_from_none():
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=5, clock=clock)
    assert bucket.take({"a": 3, "b": 5})
    assert not bucket.take({"a": 1, "b": 1})  # b is empty: a keeps its two tokens
    assert bucket.take({"a": 2}) and not bucket.take({"a": 1})
    clock.now = 2.0
    assert not bucket.take({"b": 3}) and bucket.take({"b": 2})  # refilled by the rate only
    assert not bucket.take({"c": 6})  # more than a burst never passes
    assert TokenBucket(0, 0, clock).take({"x": 100})  # rate 0: off


def test_token_bucket_says_how_long_a_refused_take_must_wait():
    clock = Clock()
    bucket = TokenBucket(rate=0.25, burst=2, clock=clock)
    assert bucket.wait_s({"a": 2}) == 0.0  # a full bucket: no wait
    assert bucket.take({"a": 2}) and not bucket.take({"a": 1})
    assert bucket.wait_s({"a": 1}) == 4.0  # one token per 4 s
    assert bucket.wait_s({"a": 2, "b": 1}) == 8.0  # the emptiest key decides
    clock.now = 4.0
    assert bucket.wait_s({"a": 1}) == 0.0 and bucket.take({"a": 1})
    assert TokenBucket(0, 0, clock).wait_s({"x": 100}) == 0.0  # rate 0: off


def test_token_bucket_stays_bounded_and_keeps_clients_still_limited():
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=2, clock=clock, max_clients=4)
    for client in ("a", "a", "b", "c", "d"):
        bucket.allow(client)
    clock.now = 1.0  # a is still short of its burst, b, c and d are back to full
    assert bucket.allow("e")
    assert set(bucket._buckets) == {"a", "e"}  # the refilled ones were forgotten
    assert bucket.allow("a") and not bucket.allow("a")  # a kept its debt: no fresh burst
    for client in "fghij":  # a crowd that stays spent: start afresh rather than grow
        bucket.allow(client)
        bucket.allow(client)
    assert len(bucket._buckets) <= 4


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("t=1700000000.5", 500.0),
        ("t=1700000000500", 500.0),
        ("t=1700000000500000", 500.0),
        ("1700000001", 0.0),
        (None, None),
        ("t=soon", None),
        ("t=5", None),
    ],
)
def test_queue_time_from_x_request_start(header, expected):
    from service.middleware import queue_time_ms

    assert queue_time_ms(header, now=1_700_000_001.0) == expected


@pytest.mark.parametrize(
    ("path", "instance"),
    [
        ("/v1/events", "/v1/events"),
        ("/v1/users/u 1/recommendations", "/v1/users/u%201/recommendations"),
        ('/x"<y>?#', "/x%22%3Cy%3E%3F%23"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ("//evil.example/x", "/%2Fevil.example/x"),  # never a reference to another host
    ],
)
def test_problem_instance_is_the_path_as_a_relative_reference(path, instance):
    assert instance_of(path) == instance
