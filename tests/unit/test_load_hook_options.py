"""Plain `locust` with the project's locustfile: numbers it cannot use, and -u under --autostart."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from loadtests.options import peak_users, usage_problems


def _opts(**changes) -> SimpleNamespace:
    values = {
        "num_users": None, "run_time": None, "user_rps": 0.0, "request_timeout": 5.0,
        "replay_ratio": 0.05, "headless": False, "autostart": False,
    }  # fmt: skip
    return SimpleNamespace(**{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"run_time": 0}, "-t/--run-time must be at least 1 s"),
        ({"num_users": 0}, "-u/--users must be at least 1"),
        ({"user_rps": -1.0}, "--user-rps must be at least 0"),
        ({"request_timeout": -1.0}, "--request-timeout must be positive"),
        ({"replay_ratio": 1.5}, "--replay-ratio must be between 0 and 1"),
    ],
)
def test_numbers_a_run_cannot_use_are_usage_problems(changes, said):
    """Zero used to mean "not given": -t 0 ran the profile's full length and passed."""
    problems = usage_problems(_opts(**changes))
    assert len(problems) == 1 and problems[0].startswith(said)


def test_the_defaults_and_the_smallest_values_pass():
    assert usage_problems(_opts()) == []
    assert usage_problems(_opts(num_users=1, run_time=1, replay_ratio=1.0)) == []


@pytest.mark.parametrize(
    ("mode", "given", "peak"),
    [
        ({"autostart": True}, None, None),  # the profile's, not the 1 Locust fills in
        ({"autostart": True}, 3, 3),
        ({"headless": True}, None, None),
        ({}, None, 1),  # started from the web UI: the form's value
    ],
)
def test_autostart_takes_users_as_given_like_headless(mode, given, peak):
    assert peak_users(_opts(num_users=1, **mode), given) == peak
