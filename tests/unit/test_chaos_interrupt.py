"""A signal stops a chaos run even mid-step, and never breaks into its rollback."""

import signal
from types import SimpleNamespace

import pytest

from chaos.ledger import Ledger
from chaos.runner import Interrupted, Run


class _Faults:
    """Faults whose apply is interrupted by a signal half-way (the HTTP call in flight)."""

    def prepare(self, spec):
        return dict(spec)

    def apply(self, fault):
        raise Interrupted("SIGTERM")


def _run(tmp_path) -> Run:
    run = object.__new__(Run)  # only the state the steps touch; no stack is needed
    run.faults = _Faults()
    run.ledger = Ledger(tmp_path / "faults.ledger")
    run.windows = []
    run.journal = {"method": [], "rollbacks": []}
    run.load_started = 0.0
    run.echo = lambda *_: None
    run.cleaning_up = False
    run.interrupted = False
    return run


def test_a_signal_while_a_fault_is_applied_is_not_taken_for_a_failed_step(tmp_path):
    run = _run(tmp_path)
    step = SimpleNamespace(
        label="db down", spec={"action": "link_down", "link": "api_postgres"}, phase=None
    )
    with pytest.raises(Interrupted):
        run._apply(step)
    # The fault stays in the ledger: the cleanup (or the guardian) rolls it back.
    assert [fault["link"] for _, fault in run.ledger.open_entries()] == ["api_postgres"]


def test_the_first_signal_interrupts_and_later_ones_wait_for_the_rollback(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(Interrupted):
        run._on_signal(signal.SIGTERM, None)
    assert run.cleaning_up and not run.interrupted  # execute() records the first one
    run._on_signal(signal.SIGINT, None)  # during the rollback: remembered, not raised
    assert run.interrupted


def test_an_interrupted_run_records_its_rules_and_is_judged_again_as_no_pass(tmp_path, capsys):
    from chaos.experiment import find
    from harness.cli import main
    from harness.guardrails.timeline import Timeline

    run = _run(tmp_path)
    run.experiment = find("smoke-db-blip")
    run.rules_path = tmp_path / "rules.toml"
    run.rules_path.write_text('[[rule]]\nname = "anything"\nexpr = "count >= 0"\n')
    run.run_dir, run.load_started = tmp_path, 0.0
    timeline = Timeline()
    timeline.record(1_800_000_000, "POST /v1/events", 10.0, "ok")
    timeline.write_jsonl(tmp_path / "timeline.jsonl")  # what ran before the signal
    run._record_interrupted()
    assert main(["guardrails", "check", str(tmp_path), "--out", str(tmp_path / "v")]) == 2
    captured = capsys.readouterr()
    assert "rules.toml (recorded by the run)" in captured.err
    assert "the experiment did not finish" in captured.out


class _Stopped(Exception):
    """What a signal raises once the runner's own handler is no longer installed."""


def _executable(tmp_path, monkeypatch) -> Run:
    """A run whose every step outside the one under test does nothing."""
    import chaos.runner
    from chaos.experiment import find

    run = _run(tmp_path)
    run.experiment = find("smoke-db-blip")
    run.rules_path, run.run_dir = tmp_path / "rules.toml", tmp_path
    run.rules_path.write_text('[[rule]]\nname = "anything"\nexpr = "count >= 0"\n')
    run.stack = SimpleNamespace(
        database_url=lambda: "", amqp_url=lambda: "", state={"components": {"api": {}}}
    )
    run.journal.update(steady_state={}, experiment="smoke-db-blip")
    nothing = lambda *_args, **_kwargs: None  # noqa: E731 - the steps this test skips
    for step in ("_apply_switches", "_count_broker_duplicates", "_start_load"):
        setattr(run, step, nothing)
    for step in ("_run_method", "_wait_load", "_stop_load", "_rollback_all", "_progress"):
        setattr(run, step, nothing)
    run._restore_switches = nothing
    run._start_guardian = lambda: SimpleNamespace(wait=nothing)
    run._miswired = run._leftover_faults = list
    run._settle = lambda _timeout: True
    sampler = SimpleNamespace(stop=nothing)
    monkeypatch.setattr(
        chaos.runner, "PipelineSampler", lambda *a, **k: SimpleNamespace(start=lambda: sampler)
    )
    monkeypatch.setattr(chaos.runner, "earlier", nothing)
    monkeypatch.setattr(chaos.runner, "stack_roots", lambda _stack: [])
    return run


def test_a_signal_during_the_audit_records_the_run_as_unfinished(tmp_path, monkeypatch):
    import json
    import os
    import time

    run = _executable(tmp_path, monkeypatch)

    def audit_interrupted() -> int:
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C (or CI's SIGTERM) while draining
        time.sleep(2)
        return 0

    run._conclude = audit_interrupted

    def stopped(_signum, _frame):
        raise _Stopped

    previous = signal.signal(signal.SIGINT, stopped)
    try:
        assert run.execute() == 2
    finally:
        signal.signal(signal.SIGINT, previous)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert any("did not finish" in error for error in meta["errors"])
    assert json.loads((tmp_path / "journal.json").read_text())["status"] == "interrupted"
    # A CI that reads only verdicts and JUnit files sees the run as an error too.
    assert json.loads((tmp_path / "verdict.json").read_text())["exit_code"] == 2
    assert 'errors="1"' in (tmp_path / "junit.xml").read_text()


def test_an_interrupted_run_judged_again_by_the_chaos_rules_is_no_verdict_not_lost_data(
    tmp_path, capsys
):
    from chaos.experiment import find
    from chaos.runner import DEFAULT_GUARDRAILS
    from harness.cli import main
    from harness.guardrails.timeline import Timeline

    run = _run(tmp_path)
    run.experiment = find("smoke-db-blip")
    run.rules_path, run.run_dir = DEFAULT_GUARDRAILS, tmp_path
    timeline = Timeline()
    timeline.record(1_800_000_000, "POST /v1/events", 10.0, "ok")
    timeline.write_jsonl(tmp_path / "timeline.jsonl")
    run._record_interrupted()  # no audit.json: the required audit rules have no data
    # It exited 3 (invariant violated) although nothing was audited at all.
    assert main(["guardrails", "check", str(tmp_path), "--out", str(tmp_path / "v")]) == 2
    assert "the experiment did not finish" in capsys.readouterr().out


def test_a_load_that_ends_before_the_method_stops_the_run_without_a_verdict(tmp_path, monkeypatch):
    import json
    import time

    from chaos.runner import Run as RealRun

    run = _executable(tmp_path, monkeypatch)
    del run._run_method  # the real method, with a load that is already gone
    run.experiment = run.experiment.scaled(0.05)  # its fault is due after 0.6 s
    run.locust = SimpleNamespace(poll=lambda: 2, returncode=2)  # e.g. an unknown profile
    run.load_started = time.time()

    def applied(_step):
        raise AssertionError("a fault applied while no load ran")

    run._apply = applied
    run._conclude = lambda: 0  # a verdict on no traffic once passed or breached (exit 0/1)
    assert RealRun.execute(run) == 2
    meta = json.loads((tmp_path / "run.json").read_text())
    assert any("the load ended" in error for error in meta["errors"])
    assert json.loads((tmp_path / "journal.json").read_text())["status"] == "failed"
    assert json.loads((tmp_path / "verdict.json").read_text())["exit_code"] == 2


def test_a_run_refused_before_any_load_leaves_an_error_verdict(tmp_path, monkeypatch):
    import json

    run = _executable(tmp_path, monkeypatch)
    run._leftover_faults = lambda: ["relay_rabbitmq disabled"]
    assert run.execute() == 2
    assert json.loads((tmp_path / "verdict.json").read_text())["errors"] == [
        "not run: the stack still carries an earlier fault: relay_rabbitmq disabled"
    ]
    assert 'errors="1"' in (tmp_path / "junit.xml").read_text()
