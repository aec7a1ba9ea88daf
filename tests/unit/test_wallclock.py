"""The wall clock of time decisions: real without the test switch, offset from a file with it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service import wallclock
from service.settings import ConfigError, Settings
from service.wallclock import OffsetClock, write_offset

PROD = {
    "RECO_ENV": "production",
    "RECO_API_KEYS": "shop:" + "s" * 40,
    "RECO_DATABASE_URL": "postgresql://app:Str0ng-pass@db:5432/reco",
    "RECO_AMQP_URL": "amqp://relay:An0ther-pass@mq:5672/%2F",
}


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _real_clock_after():
    yield
    wallclock.configure(Settings.from_env({}))


def _switched(path: Path, env: str = "test") -> Settings:
    return Settings.from_env(
        {
            "RECO_ENV": env,
            "RECO_UNSAFE_TEST_FAULTS": "wall_clock_offset",
            "RECO_TEST_CLOCK_FILE": str(path),
        }
    )


def test_the_offset_comes_from_the_file(tmp_path):
    path = tmp_path / "offset"
    write_offset(path, -240)
    clock = OffsetClock(path, wall=lambda: 1000.0)
    assert clock.now() == 760.0


def test_the_file_is_read_again_only_after_the_refresh_interval(tmp_path):
    path, ticks = tmp_path / "offset", Ticks()
    write_offset(path, 300)
    clock = OffsetClock(path, wall=lambda: 0.0, monotonic=ticks, refresh_s=0.2)
    assert clock.now() == 300.0
    write_offset(path, -240)  # a backward step mid-run
    ticks.now = 0.19
    assert clock.now() == 300.0, "read again before the interval"
    ticks.now = 0.2
    assert clock.now() == -240.0
    write_offset(path, 0)
    ticks.now = 0.3
    assert clock.now() == -240.0
    ticks.now = 0.41
    assert clock.now() == 0.0


@pytest.mark.parametrize("content", [None, "", "soon", "nan", "inf"])
def test_a_missing_or_unreadable_file_means_no_offset(tmp_path, content):
    path = tmp_path / "offset"
    if content is not None:
        path.write_text(content)
    assert OffsetClock(path, wall=lambda: 5.0).now() == 5.0


def test_with_the_switch_now_follows_the_file(tmp_path):
    path = tmp_path / "offset"
    write_offset(path, 300)
    wallclock.configure(_switched(path))
    assert wallclock.now() - time.time() == pytest.approx(300, abs=1)


def test_without_the_switch_now_is_time_time_and_never_opens_the_file(tmp_path, monkeypatch):
    path = tmp_path / "offset"
    write_offset(path, 300)

    def no_read(*_args, **_kwargs):
        raise AssertionError("the clock file was read without the switch")

    monkeypatch.setattr(wallclock, "read_offset", no_read)
    for env in ("development", "production"):
        settings = Settings.from_env({**PROD, "RECO_ENV": env} if env == "production" else {})
        wallclock.configure(settings)
        assert wallclock.now() == pytest.approx(time.time(), abs=1)


def test_the_switch_is_ignored_outside_the_test_environment(tmp_path, monkeypatch):
    path = tmp_path / "offset"
    write_offset(path, 300)
    monkeypatch.setattr(wallclock, "read_offset", lambda _p: pytest.fail("file read"))
    wallclock.configure(_switched(path, env="development"))
    assert wallclock.now() == pytest.approx(time.time(), abs=1)


@pytest.mark.parametrize(
    "extra",
    [
        {"RECO_UNSAFE_TEST_FAULTS": "wall_clock_offset", "RECO_TEST_CLOCK_FILE": "/tmp/x"},
        {"RECO_TEST_CLOCK_FILE": "/tmp/x"},
    ],
)
def test_production_refuses_the_clock_switch_and_its_file(extra):
    with pytest.raises(ConfigError, match="^RECO_[A-Z_]+: not allowed in production"):
        Settings.from_env({**PROD, **extra})


def test_the_switch_needs_its_file():
    with pytest.raises(ConfigError, match="^RECO_TEST_CLOCK_FILE: required"):
        Settings.from_env({"RECO_ENV": "test", "RECO_UNSAFE_TEST_FAULTS": "wall_clock_offset"})
