"""wait_until: other exceptions mean "not yet"; a StackError from the probe ends the wait."""

from __future__ import annotations

import pytest

from harness.stack.procs import StackError, wait_until


def test_a_probe_that_fails_then_succeeds_is_waited_for():
    calls = iter([ConnectionRefusedError("booting"), False, True])

    def probe() -> bool:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert wait_until(probe, 5, "server", interval=0.001) >= 0


def test_a_stack_error_from_the_probe_ends_the_wait_at_once():
    calls = []

    def probe() -> bool:
        calls.append(1)
        raise StackError("server exited with 1")

    with pytest.raises(StackError, match="exited with 1"):
        wait_until(probe, 60, "server", interval=0.001)
    assert len(calls) == 1


def test_the_last_error_is_named_when_time_runs_out():
    def probe() -> bool:
        raise ConnectionRefusedError("refused")

    with pytest.raises(StackError, match="server not ready after 0s: refused"):
        wait_until(probe, 0.01, "server", interval=0.001)
