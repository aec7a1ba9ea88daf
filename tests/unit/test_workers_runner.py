"""The shared run loop: idle waits, capped jittered backoff, graceful stop, bounded loops."""

from __future__ import annotations

import signal
from unittest.mock import patch

import pytest

from workers import runner as runner_module
from workers.runner import Backoff, Runner


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeWorker:
    """Plays back a script of run_once outcomes: an int, or an exception to raise."""

    name = "fake"

    def __init__(self, clock: FakeClock, script):
        self.clock = clock
        self.script = list(script)
        self.calls: list[tuple] = []
        self.stop_requested = False

    def run_once(self) -> int:
        self.calls.append(("run_once",))
        outcome = self.script.pop(0) if self.script else 0
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def wait(self, timeout: float) -> None:
        self.calls.append(("wait", round(timeout, 3)))
        self.clock.now += timeout

    def reset(self, error: BaseException) -> None:
        self.calls.append(("reset", type(error).__name__))

    def request_stop(self) -> None:
        self.stop_requested = True

    def close(self) -> None:
        self.calls.append(("close",))


def _runner(worker, clock, **kwargs) -> Runner:
    backoff = Backoff(base_s=1.0, cap_s=8.0, rng=lambda: 1.0)
    return Runner(worker, idle_s=0.1, backoff=backoff, clock=clock, **kwargs)


def test_backoff_doubles_up_to_the_cap_with_equal_jitter():
    low = Backoff(base_s=0.5, cap_s=4.0, rng=lambda: 0.0)
    high = Backoff(base_s=0.5, cap_s=4.0, rng=lambda: 1.0)
    assert [high.delay(n) for n in (1, 2, 3, 4, 5, 50)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [low.delay(n) for n in (1, 2, 4, 10_000)] == [0.25, 0.5, 2.0, 2.0]


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError):
        Backoff(base_s=0, cap_s=1)
    with pytest.raises(ValueError):
        Backoff(base_s=2, cap_s=1)


def test_busy_iterations_loop_without_waiting_and_idle_ones_wait():
    clock = FakeClock()
    worker = FakeWorker(clock, [5, 3, 0])
    runner = _runner(worker, clock, max_iterations=3)
    assert runner.run() == 0
    assert worker.calls == [
        ("run_once",),
        ("run_once",),
        ("run_once",),
        ("wait", 0.1),
        ("close",),
    ]
    assert runner.handled == 8


def test_failures_reset_then_back_off_in_slices_and_recover():
    clock = FakeClock()
    worker = FakeWorker(clock, [OSError("db down"), OSError("still down"), 2])
    runner = _runner(worker, clock, max_iterations=3, pause_slice_s=1.0)
    runner.run()
    resets = [c for c in worker.calls if c[0] == "reset"]
    assert resets == [("reset", "OSError"), ("reset", "OSError")]
    waits = [c[1] for c in worker.calls if c[0] == "wait"]
    assert waits == [1.0, 1.0, 1.0]  # 1 s after the first failure, 2 s after the second
    assert clock.now == pytest.approx(3.0)
    assert runner.recovered and runner.handled == 2
    assert runner.failures == 2  # forgotten only after stable_s without a failure


def test_a_flapping_dependency_keeps_the_backoff_growing_until_the_loop_is_stable():
    clock = FakeClock()
    # Up for one iteration between failures (a link that reconnects, then drops again).
    script = [OSError("down"), 1, OSError("down"), 1, OSError("down"), 1]
    worker = FakeWorker(clock, script)
    runner = _runner(worker, clock, max_iterations=6, pause_slice_s=8.0)
    runner.run()
    pauses = [c[1] for c in worker.calls if c[0] == "wait" and c[1] != 0.1]
    assert pauses == [1.0, 2.0, 4.0]  # not 1, 1, 1: each success did not reset the count
    assert runner.failures == 3

    clock.now += runner.stable_s  # a quiet spell that long...
    worker.script = [2, OSError("down")]
    runner.max_iterations += 2
    runner.run()
    assert worker.calls[-2:] == [("wait", 1.0), ("close",)]  # ...and the backoff starts over


def test_request_stop_finishes_the_iteration_then_closes_once():
    clock = FakeClock()
    worker = FakeWorker(clock, [1, 1, 1])
    runner = _runner(worker, clock, max_iterations=100)
    original = worker.run_once

    def run_once_then_signal():
        handled = original()
        runner._on_signal(signal.SIGTERM, None)
        return handled

    worker.run_once = run_once_then_signal
    with patch.object(runner_module.log, "info") as info:
        runner.run()
    assert worker.calls == [("run_once",), ("close",)]
    assert worker.stop_requested
    # Logged from the loop, not from the handler (a write there can interrupt another one).
    info.assert_any_call("stop requested", extra={"signal": "SIGTERM"})


def test_the_signal_handler_only_sets_flags():
    clock = FakeClock()
    runner = _runner(FakeWorker(clock, [1]), clock, max_iterations=1)
    with patch.object(runner_module, "log") as log:
        runner._on_signal(signal.SIGINT, None)
        runner._on_signal(signal.SIGTERM, None)
    assert not log.mock_calls  # no write that could interrupt another one on the same stream
    assert runner.stopping and runner.signal_name == "SIGINT"


def test_stop_cuts_a_backoff_short():
    clock = FakeClock()
    worker = FakeWorker(clock, [RuntimeError("broker gone")])
    runner = _runner(worker, clock, max_iterations=5, pause_slice_s=0.5)
    original = worker.wait

    def wait_then_stop(timeout):
        original(timeout)
        runner.request_stop()

    worker.wait = wait_then_stop
    runner.run()
    assert [c for c in worker.calls if c[0] == "wait"] == [("wait", 0.5)]
    assert worker.calls[-1] == ("close",)


def test_max_seconds_bounds_the_loop():
    clock = FakeClock()
    worker = FakeWorker(clock, [])
    runner = _runner(worker, clock, max_seconds=1.0)
    runner.run()
    assert 10 <= runner.iterations <= 11  # each idle iteration waits 0.1 s of fake time


def test_a_failing_wait_or_close_never_escapes_the_loop():
    clock = FakeClock()
    worker = FakeWorker(clock, [0])

    def broken(*_args):
        raise RuntimeError("boom")

    worker.wait = broken
    worker.close = broken
    runner = _runner(worker, clock, max_iterations=2)
    assert runner.run() == 0


def test_beats_report_liveness_on_success_and_during_backoff():
    clock = FakeClock()
    beats: list[dict] = []
    worker = FakeWorker(clock, [ValueError("x"), 1])
    runner = _runner(worker, clock, max_iterations=2, pause_slice_s=0.5)
    runner.beat = lambda **details: beats.append(details)
    runner.run()
    assert {"failures": 1} in beats and beats[-1] == {"failures": 0}


class ImpatientWorker(FakeWorker):
    """A worker whose wait returns at once, as the relay's does after losing its connections."""

    def wait(self, timeout: float) -> None:
        self.calls.append(("wait", round(timeout, 3)))


def test_a_backoff_takes_its_time_when_the_worker_wait_returns_at_once():
    clock = FakeClock()
    worker = ImpatientWorker(clock, [OSError("db down"), OSError("still down"), 2])
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    runner = _runner(worker, clock, max_iterations=3, pause_slice_s=0.5, sleep=sleep)
    runner.run()
    # Delays 1 s, then 2 s (rng 1.0: the ceiling), in half-second slices.
    assert clock.now == pytest.approx(3.0)
    assert slept == pytest.approx([0.5] * 6)
    assert [c for c in worker.calls if c[0] == "run_once"] == [("run_once",)] * 3


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), (["--bogus"], 2)])
def test_a_worker_given_options_answers_them_instead_of_starting(argv, code, capsys):
    from workers.main import main

    def never(*_args):
        raise AssertionError("the worker must not start")

    with pytest.raises(SystemExit) as exited:
        main("relay", never, never, never, argv=argv)
    assert exited.value.code == code
    out = capsys.readouterr()
    assert "usage: python -m workers.relay" in out.out + out.err
    if code == 0:
        assert "RECO_" in out.out
