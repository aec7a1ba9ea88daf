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
    stall, plain = find("db-commit-stall"), find("db-down")
    mine = tmp_path / "mine.toml"
    assert guardrails_path(stall, mine) == ROOT / "chaos" / "guardrails-commit-stall.toml"
    assert guardrails_path(plain, mine) == mine
    assert guardrails_path(plain) == DEFAULT_GUARDRAILS


def test_a_bad_default_file_is_refused_before_the_stack_starts(tmp_path: Path, no_stack) -> None:
    bad = tmp_path / "strict.toml"
    bad.write_text('extends = "guardrails.toml"\n[[rule]]\nexpr = "p(99) <"\n')
    result = CliRunner().invoke(
        chaos_command.command,
        ["run", "db-down", "--guardrails", str(bad), "--state-dir", str(tmp_path / "state")],
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
