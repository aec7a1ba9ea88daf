"""An API whose wall clock is skewed (the wall_clock_offset test fault) judges "future" events
against its own clock: inside RECO_EVENT_MAX_FUTURE_S of it they are accepted, beyond refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest

from harness.pytest_plugins.service import idem_key
from service import wallclock
from service.app import create_app
from service.settings import Settings
from service.wallclock import REFRESH_S, write_offset

MAX_FUTURE_S = 300.0


@pytest.fixture
def skewed(app_settings, tmp_path):
    """A client of an in-process app with the switch on, and the file that sets its offset."""
    path = tmp_path / "clock-offset"
    settings = dataclasses.replace(
        app_settings,
        environment="test",
        unsafe_test_faults="wall_clock_offset",
        test_clock_file=str(path),
        event_max_future_s=MAX_FUTURE_S,
    )
    application = create_app(settings)
    application.config["TESTING"] = True
    try:
        yield application.test_client(), path
    finally:
        application.extensions["reco"].db.pool.close()
        wallclock.configure(Settings())  # the next app in this process reads the real clock


def _post(client, auth, make_events, at: float) -> int:
    body = make_events()
    body["events"][0]["occurred_at"] = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
    resp = client.post("/v1/events", json=body, headers={**auth, "Idempotency-Key": idem_key()})
    return resp.status_code


def _step(path, seconds: float) -> None:
    """Move the app's clock and wait until it has read the file again (bounded)."""
    write_offset(path, seconds)
    time.sleep(REFRESH_S * 1.5)


@pytest.mark.parametrize("offset", [-240.0, 300.0])
def test_current_events_are_accepted_and_the_limit_follows_the_skewed_clock(
    skewed, auth, make_events, offset
):
    client, path = skewed
    _step(path, offset)
    real = time.time()
    assert _post(client, auth, make_events, real) == 202
    # Just inside and just beyond the window of the API's own (skewed) clock. Were the offset
    # ignored, -240 would accept real+61 and +300 would refuse real+599: both asserts catch it.
    assert _post(client, auth, make_events, real + offset + MAX_FUTURE_S - 1) == 202
    assert _post(client, auth, make_events, real + offset + MAX_FUTURE_S + 1) == 422


def test_a_backward_step_mid_run_takes_effect_without_a_restart(skewed, auth, make_events):
    client, path = skewed
    _step(path, 300.0)
    assert _post(client, auth, make_events, time.time() + 500) == 202
    _step(path, -240.0)
    assert _post(client, auth, make_events, time.time() + 500) == 422
    assert _post(client, auth, make_events, time.time()) == 202
