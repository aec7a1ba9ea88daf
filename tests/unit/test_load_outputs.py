"""Locust-free parts of the load profiles: outputs, run state and workload."""

from __future__ import annotations

import random

import pytest

from loadtests import outputs, workload
from loadtests.runstate import RunState


@pytest.mark.parametrize(
    ("status", "retry_after", "shed"),
    [(503, "1", True), (429, "Wed, 21 Oct 2026 07:28:00 GMT", True), (503, None, False),
     (429, "", False), (500, "1", False), (200, None, False)],
)  # fmt: skip
def test_only_a_refusal_with_retry_after_is_an_intended_shed(status, retry_after, shed):
    assert workload.is_shed(status, retry_after) is shed


def test_an_accepted_event_must_be_found_only_a_random_id_may_be_unknown():
    rng = random.Random(1)
    event_id, expected = workload.status_poll(rng, ["e-1", "e-2"])
    assert event_id in ("e-1", "e-2") and expected == (200,)
    event_id, expected = workload.status_poll(rng, [])
    assert len(event_id) == 36 and expected == (200, 404)


def test_no_successful_scrape_is_reported_as_a_harness_error():
    state = RunState(metrics_url="http://127.0.0.1:1/metrics")
    state.scrape_failures = 3
    message = outputs.scrape_error(state)
    assert message and "0 of 3 scrapes" in message
    assert outputs.scrape_error(RunState(metrics_url=None)) is None
