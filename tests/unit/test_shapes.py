"""Load shapes' tick() logic and the simulated clients' pure behaviour (no Locust imported)."""

from __future__ import annotations

import json
import random
import sys

import pytest

from loadtests import shapes, workload


def ticks(shape, until: float, step: float = 1.0) -> list:
    return [shape.tick(t * step) for t in range(int(until / step))]


def test_no_locust_import() -> None:
    # Locust monkey-patches with gevent at import; the pytest process must never load it.
    assert "locust" not in sys.modules


@pytest.mark.parametrize("name", sorted(shapes.PROFILES))
def test_every_profile_ends_and_never_exceeds_its_peak(name: str) -> None:
    shape = shapes.build(name, users=30, duration=100)
    seen = [t for t in ticks(shape, shape.duration) if t is not None]
    assert seen, "a profile must offer load"
    assert max(users for users, _ in seen) <= 30
    assert all(rate > 0 for _, rate in seen)
    if isinstance(shape, shapes.StressShape):
        for step in range(shape.steps):  # pretend every step held the SLO
            shape.observe(shapes.Step(step, shape.users_at(step), 10, 10, 5.0, 0.0))
    assert shape.tick(shape.duration + 0.01) is None


def test_smoke_ramps_then_holds() -> None:
    shape = shapes.build("smoke")
    assert shape.duration == 15
    assert shape.tick(0) == (10, 5.0)
    assert shape.tick(14.9) == (10, 5.0)
    assert shape.tick(15) is None
    assert shape.phases["plateau"] == (2.0, 15.0)
    assert shape.offered_rps(10) == 20.0


def test_steady_scales_with_users_and_duration() -> None:
    shape = shapes.build("steady", users=100, duration=60, user_rps=0.5)
    assert shape.tick(30) == (100, 100 / 6)
    assert shape.phases == {"ramp": (0.0, 6.0), "plateau": (6.0, 60.0)}
    assert shape.offered_rps(100) == 50.0


def test_step_climbs_in_five_equal_stages() -> None:
    shape = shapes.build("step", users=50, duration=100)
    assert [shape.tick(t)[0] for t in (0, 25, 45, 65, 85)] == [10, 20, 30, 40, 50]
    assert shape.phases["step 3"] == (40.0, 60.0)
    assert shape.tick(100) is None


def test_spike_triples_within_ten_seconds_and_returns() -> None:
    shape = shapes.build("spike", users=90, duration=180)
    base, peak = shape.tick(10), shape.tick(70)
    assert base[0] == 30 and peak[0] == 90
    assert (peak[0] - base[0]) / peak[1] == pytest.approx(10.0)  # 0 -> 3R in 10 s
    assert shape.tick(150)[0] == 30
    spike_start, spike_end = shape.phases["spike"]
    assert (spike_start, spike_end) == (60.0, 90.0)
    assert shape.phases["recovery"][0] == spike_end + 30  # SLO back within 30 s
    assert shape.phases["recovery"][1] == 180


def test_soak_compares_early_and_late_windows() -> None:
    shape = shapes.build("soak", users=40, duration=7200)
    assert shape.phases["early"] == (60.0, 960.0)
    assert shape.phases["late"] == (6300.0, 7200.0)


def test_unknown_profile_and_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        shapes.build("nope")
    with pytest.raises(ValueError, match="positive"):
        shapes.build("smoke", users=0)


def stress_shape() -> shapes.StressShape:
    return shapes.StressShape(max_users=100, user_rps=2.0, steps=4, step_s=10.0, p99_ms=200.0)


def test_stress_ramps_in_equal_steps_and_waits_for_late_data() -> None:
    shape = stress_shape()
    assert [shape.tick(t)[0] for t in (0, 10, 20, 30)] == [25, 50, 75, 100]
    assert shape.judge_window(1) == (15.0, 20.0)
    assert shape.due(19.0, lag_s=1.5) == 0
    assert shape.due(9.0, lag_s=1.5) is None
    # The last step is held until judged, then the run ends.
    assert shape.tick(45)[0] == 100


@pytest.mark.parametrize(
    ("duration", "steps", "step_s"), [(300, 20, 15.0), (60, 15, 4.0), (20, 5, 4.0), (3, 1, 3.0)]
)
def test_stress_fits_its_steps_into_the_run_time(duration, steps, step_s) -> None:
    """-t sets the length: a short run takes fewer steps (it used to take 80 s whatever -t)."""
    shape = shapes.build("stress", users=40, duration=duration)
    assert (shape.steps, shape.step_s) == (steps, step_s)
    assert shape.steps * shape.step_s == duration


def test_stress_stops_at_the_first_broken_step_and_reports_the_knee() -> None:
    shape = stress_shape()
    assert shape.observe(shapes.Step(0, 25, 50.0, 50.0, 20.0, 0.0))
    assert shape.observe(shapes.Step(1, 50, 100.0, 99.0, 80.0, 0.0))
    assert not shape.observe(shapes.Step(2, 75, 150.0, 120.0, 450.0, 0.01))
    assert shape.tick(25) is None
    knee = shape.knee()
    assert knee["found"] and knee["users"] == 50 and knee["rps"] == 99.0
    assert "p99 450 ms > 200 ms" in knee["reason"]
    assert "error ratio" in knee["reason"] and "achieved 120.0 rps" in knee["reason"]


def test_stress_without_a_break_says_so() -> None:
    shape = stress_shape()
    for step in range(4):
        shape.observe(shapes.Step(step, shape.users_at(step), 10, 10, 5.0, 0.0))
    knee = shape.knee()
    assert not knee["found"] and knee["users"] == 100
    assert "raise --users" in knee["reason"]


def test_stress_broken_at_its_first_step_says_where_the_knee_is(tmp_path) -> None:
    shape = stress_shape()
    assert not shape.observe(shapes.Step(0, 25, 50.0, 20.0, 900.0, 0.0))
    knee = shape.knee()
    assert knee["found"] and knee["users"] is None and knee["broken_at"]["users"] == 25
    assert "first step (25 users) already broke the SLO" in knee["reason"]
    assert "p99 900 ms" in knee["reason"] and "lower --users" in knee["reason"]
    # An overload run pointed at that stress run repeats why it has no capacity to use.
    (tmp_path / "summary.json").write_text(json.dumps({"knee": knee}))
    with pytest.raises(ValueError, match="no stress knee .*lower --users"):
        shapes.capacity_of(str(tmp_path))


def test_stress_gives_up_when_no_step_is_ever_judged() -> None:
    shape = stress_shape()
    assert shape.tick(shape.duration + shape.step_s) is None


def test_zipf_makes_a_few_keys_hot() -> None:
    rng = random.Random(7)
    zipf = workload.Zipf(1000)
    draws = [zipf.draw(rng) for _ in range(20_000)]
    assert min(draws) >= 1 and max(draws) <= 1000
    top = sum(d <= 10 for d in draws) / len(draws)
    assert 0.3 < top < 0.6  # 1% of the keys get a third or more of the traffic


def test_event_batches_are_valid_and_fresh() -> None:
    rng = random.Random(1)
    users, items = workload.Zipf(50), workload.Zipf(workload.ITEMS)
    a = workload.event_batch(rng, users, items, 5)
    b = workload.event_batch(rng, users, items, 5)
    ids = [e["event_id"] for e in a["events"] + b["events"]]
    assert len(set(ids)) == 10
    for event in a["events"]:
        assert set(event) == {"event_id", "user_id", "item_id", "kind", "occurred_at"}
        assert 1 <= event["item_id"] <= workload.ITEMS
        assert event["kind"] in workload.KINDS
        assert event["occurred_at"].endswith("Z")
    key = workload.idempotency_key()
    assert key.startswith('"') and key.endswith('"') and len(key) == 38


def test_retry_delay_honours_retry_after_with_capped_jitter() -> None:
    rng = random.Random(3)
    delays = [workload.retry_delay(1, 1.0, rng) for _ in range(200)]
    assert all(1.0 <= d <= 1.25 for d in delays)
    assert len({round(d, 4) for d in delays}) > 100  # jittered, not lockstep
    grown = [workload.retry_delay(5, None, rng, base=0.25, cap=2.0) for _ in range(200)]
    assert max(grown) <= 2.0 and max(grown) > 1.0
    assert workload.retry_delay(1, 30.0, rng, cap=5.0) is None  # too long: give up, recorded


def test_parse_retry_after_accepts_seconds_and_http_dates() -> None:
    assert workload.parse_retry_after("2") == 2.0
    assert workload.parse_retry_after(None) is None
    assert workload.parse_retry_after("soon") is None
    date = "Sun, 29 Nov 2026 05:00:10 GMT"
    now = 1795928400.0  # 05:00:00 that day
    assert workload.parse_retry_after(date, now=now) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (202, None, "ok"),
        (400, None, "fail"),
        (409, None, "fail"),
        (422, None, "fail"),
        (429, None, "fail"),
        (503, None, "fail"),  # the API promises 503 committed nothing
        (500, None, "info"),
        (502, None, "info"),
        (504, None, "info"),
        (None, TimeoutError("read"), "info"),
        (None, ConnectionResetError(), "info"),
        (None, ConnectionRefusedError(), "fail"),
    ],
)
def test_write_outcomes_follow_the_jepsen_convention(status, error, outcome) -> None:
    assert workload.classify(status, error) == outcome


def test_history_appends_one_line_per_operation(tmp_path) -> None:
    history = workload.History(tmp_path / "run" / "history.jsonl")
    history.record(t=1.0, op="write", key='"k"', event_ids=["a"], outcome="ok", status=202)
    history.record(t=2.0, op="write", key='"k"', event_ids=["a"], outcome="info", status=None)
    history.close()
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["outcome"] for x in lines] == ["ok", "info"]


def test_overload_holds_twice_the_capacity_for_five_minutes_then_nominal() -> None:
    shape = shapes.build("overload", capacity_rps=150, user_rps=1)
    assert shape.duration == 420 and shape.capacity_rps == 150
    assert shape.tick(10) == (90, shape.stages[0].spawn_rate)  # R = 0.6 C
    assert shape.tick(200)[0] == 300  # 2 C
    assert shape.tick(400)[0] == 90
    start, end = shape.phases["overload"]
    assert end - start == 295 and shape.phases["settle"] == (330.0, 360.0)
    assert shape.phases["recovery"] == (360.0, 420.0)


def test_overload_capacity_from_a_number_or_a_stress_runs_knee(tmp_path) -> None:
    assert shapes.capacity_of("212.5") == 212.5
    knee = {"found": True, "rps": 240.0, "users": 120}
    (tmp_path / "summary.json").write_text(json.dumps({"knee": knee}))
    assert shapes.capacity_of(str(tmp_path)) == 240.0
    # A stress run whose SLO held to the last step only bounds the capacity from below.
    (tmp_path / "summary.json").write_text(json.dumps({"knee": knee | {"found": False}}))
    with pytest.raises(ValueError, match="never broke its SLO"):
        shapes.capacity_of(str(tmp_path))
    (tmp_path / "summary.json").write_text(json.dumps({"knee": None}))
    with pytest.raises(ValueError, match="records no stress knee"):
        shapes.capacity_of(str(tmp_path))
    with pytest.raises(ValueError, match="positive"):
        shapes.capacity_of("0")
    with pytest.raises(ValueError, match="only the overload profile"):
        shapes.build("steady", capacity_rps=100)
