"""Locust-free parts of the load profiles: outputs, run state and workload."""

from __future__ import annotations

from loadtests import outputs
from loadtests.runstate import RunState


def test_no_successful_scrape_is_reported_as_a_harness_error():
    state = RunState(metrics_url="http://127.0.0.1:1/metrics")
    state.scrape_failures = 3
    message = outputs.scrape_error(state)
    assert message and "0 of 3 scrapes" in message
    assert outputs.scrape_error(RunState(metrics_url=None)) is None
