"""Which rule file judges a chaos experiment, and a bad one refused before any stack starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import harness.commands.chaos as chaos_command
from chaos.experiment import find
from chaos.runner import DEFAULT_GUARDRAILS, guardrails_path

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = """\
title = "t"
description = "d"
{guardrails}
[[method]]
action = "process"
target = "relay"
mode = "pause"
start = "5s"
duration = "5s"

[load]
duration = "30s"
"""


class NoStack:
    """Stands in for the stack: constructing one means a run was about to start."""

    def __init__(self, *_args, **_kwargs):
        raise AssertionError("the stack must not start when a rule file is bad")


@pytest.fixture
def no_stack(monkeypatch):
    monkeypatch.setattr(chaos_command, "Stack", NoStack)


def test_an_experiments_own_file_wins_then_the_default_then_ours(tmp_path: Path) -> None:
    stall, plain = find("db-commit-stall"), find("db-slow")
    mine = tmp_path / "mine.toml"
    assert guardrails_path(stall, mine) == ROOT / "chaos" / "guardrails-commit-stall.toml"
    assert guardrails_path(plain, mine) == mine
    assert guardrails_path(plain) == DEFAULT_GUARDRAILS


def test_a_bad_default_file_is_refused_before_the_stack_starts(tmp_path: Path, no_stack) -> None:
    bad = tmp_path / "strict.toml"
    bad.write_text('extends = "guardrails.toml"\n[[rule]]\nexpr = "p(99) <"\n')
    result = CliRunner().invoke(
        chaos_command.command,
        ["run", "db-slow", "--guardrails", str(bad), "--state-dir", str(tmp_path / "state")],
        standalone_mode=False,
    )
    assert result.return_value == 2, result.output
    assert f"{bad}:1: extends 'guardrails.toml': cannot read" in result.output


def test_an_experiments_bad_file_is_refused_before_the_stack_starts(
    tmp_path: Path, no_stack
) -> None:
    (tmp_path / "rules.toml").write_text('[[rule]]\nsource = "audit"\nexpr = "lost_count =="\n')
    experiment = tmp_path / "paused-relay.toml"
    experiment.write_text(EXPERIMENT.format(guardrails='guardrails = "rules.toml"'))
    result = CliRunner().invoke(
        chaos_command.command,
        ["run", str(experiment), "--guardrails", str(DEFAULT_GUARDRAILS)],
        standalone_mode=False,
    )
    assert result.return_value == 2, result.output
    assert f"{tmp_path / 'rules.toml'}:3: rule expr: cannot parse" in result.output


def test_a_fault_that_failed_to_apply_or_roll_back_is_counted_for_the_verdict() -> None:
    from types import SimpleNamespace

    from chaos.runner import Run

    journal = {
        "method": [{"label": "a", "error": None}, {"label": "b", "error": "rabbitmqctl failed"}],
        "rollbacks": [
            {"label": "a", "status": "ok", "result": None},
            {"label": "b", "status": "failed: gone", "result": None},
            {"label": "m", "status": "ok", "result": {"ok": False, "exit_codes": [0, 1]}},
            {"label": "n", "status": "ok", "result": {"ok": True}},
        ],
    }
    outcome = Run._method_outcome(SimpleNamespace(journal=journal))
    assert outcome == {"fault_errors": 1, "rollback_failures": 1, "fault_checks_failed": 1}


def test_worker_and_broker_faults_are_judged_on_the_api_during_the_fault() -> None:
    from harness import guardrails

    unaffected = ROOT / "chaos" / "guardrails-api-unaffected.toml"
    for name in ("broker-down", "broker-alarm", "relay-kill", "relay-pause", "relay-db-blackhole",
                 "relay-amqp-reset", "consumer-kill",
                 "consumer-partition", "consumer-db-down", "unroutable", "poison"):  # fmt: skip
        assert guardrails_path(find(name)).resolve() == unaffected, name
    rules = guardrails.load_rules(unaffected).rules
    during = [e.text for r in rules if r.phase.text == "fault" for e in r.exprs]
    assert during == ["error_ratio < 2%"]
    # Every rule the chaos defaults hold, including the method's own, is inherited.
    names = {r.name for r in guardrails.load_rules(DEFAULT_GUARDRAILS).rules}
    assert (
        "the method ran as written: every fault applied, held its own checks, rolled back" in names
    )
    assert names < {r.name for r in rules}


def test_probes_count_liveness_failures_and_readiness_failing_only_during_a_fault() -> None:
    from types import SimpleNamespace

    from chaos.runner import Run, Window

    window = Window("db down", "down", 10.0)
    window.end = 20.0
    run = SimpleNamespace(
        windows=[window],
        liveness=[(5.0, 200), (15.0, None), (25.0, 200)],
        readiness=[(5.0, 503), (15.0, 200), (25.0, 200)],  # the 503 came before the fault
    )
    assert Run._probe_outcome(run) == {"liveness_failures": 1, "readiness_flipped": 0}
    run.readiness.append((12.0, 503))
    assert Run._probe_outcome(run)["readiness_flipped"] == 1
    unreachable = ROOT / "chaos" / "guardrails-db-unreachable.toml"
    for name in ("db-down", "db-blackhole"):
        assert guardrails_path(find(name)).resolve() == unreachable, name


def test_broker_duplicates_sum_the_consumers_counter_across_restarts() -> None:
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from chaos.probes import CounterIncrease, counter_value

    registry = CollectorRegistry()
    Counter("reco_consumer_duplicates", "d", registry=registry).inc(7)
    Counter("reco_consumer_applied", "a", ["stage"], registry=registry).labels("x").inc(3)
    page = generate_latest(registry).decode()
    assert counter_value(page, "reco_consumer_duplicates") == 7.0
    assert counter_value(page, "reco_consumer_missing") is None
    seen = CounterIncrease()
    for value in (5.0, None, 9.0, 12.0, 2.0, 4.0):  # earlier runs' 5; a restart after 12
        seen.observe(value)
    assert seen.total == (12 - 5) + 4
