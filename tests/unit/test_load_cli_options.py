"""`reco-harness load run` takes Locust's short options for users and run time."""

from __future__ import annotations

import pytest

from harness.cli import main


@pytest.fixture
def parsed(monkeypatch):
    """Stop the run where the profile is built; keep what the options parsed to."""
    seen: dict = {}

    def build(profile, users, seconds, user_rps):
        seen.update(profile=profile, users=users, seconds=seconds)
        raise ValueError("stop here")

    monkeypatch.setattr("harness.commands.load.shapes.build", build)
    return seen


@pytest.mark.parametrize(
    "argv",
    [
        ["-u", "7", "-t", "90s"],
        ["--users", "7", "--duration", "90s"],
        ["--users", "7", "--run-time", "1m30s"],
    ],
)
def test_short_and_locust_spellings_mean_the_same(parsed, argv):
    assert main(["load", "run", "--profile", "steady", *argv]) == 2
    assert parsed == {"profile": "steady", "users": 7, "seconds": 90.0}
