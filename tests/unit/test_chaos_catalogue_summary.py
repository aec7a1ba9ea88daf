"""A catalogue run ends with one table and summary.json; Ctrl-C leaves the rest not started."""

import json

import pytest

import chaos.runner
from harness.cli import main
from harness.commands import chaos as command

EXITS = {"smoke-db-blip": 0, "poison": 1, "nc-consumer-ack-before-commit": 3}


class _Stack:
    """A running stack already wired through fault proxies (nothing to start or stop)."""

    chaos = True
    toxiproxy_url = "http://127.0.0.1:1"

    def __init__(self, state_dir, chaos=False):
        self.state_dir = state_dir

    def miswired(self, _name):
        """Every app reaches its dependencies through its proxies."""

    def fault_proxy_gone(self):
        return False


def _fake_run(interrupt_at: str | None):
    class _Run:
        def __init__(self, experiment, stack, run_dir, echo, guardrails_file=None):
            self.name = experiment.name
            self.run_dir = run_dir
            self.interrupted = False

        def execute(self) -> int:
            (self.run_dir / "report.html").write_text("<html></html>")
            if self.name == interrupt_at:
                self.interrupted = True
                return 2
            return EXITS[self.name]

    return _Run


@pytest.fixture
def fake_stack(monkeypatch):
    monkeypatch.setattr(command, "Stack", _Stack)
    monkeypatch.setattr(command, "_running", lambda _stack: True)
    monkeypatch.setattr(command, "_report", lambda _run_dir: None)


def _run(tmp_path, *names: str) -> int:
    return main(["chaos", "run", *names, "--state-dir", str(tmp_path / "s"), "--out",
                 str(tmp_path / "out")])  # fmt: skip


def test_every_experiment_gets_a_row_and_the_worst_exit_wins(
    fake_stack, monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(chaos.runner, "Run", _fake_run(None))
    assert _run(tmp_path, *EXITS) == 1
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["experiments"]
    assert [(r["experiment"], r["exit"], r["outcome"]) for r in rows] == [
        ("smoke-db-blip", 0, "pass"),
        ("poison", 1, "guardrail breach"),
        ("nc-consumer-ack-before-commit", 3, "caught as expected"),
    ]
    assert rows[2]["negative_control"] and rows[0]["run_dir"].endswith("smoke-db-blip")
    assert [r["passed"] for r in rows] == [True, False, True]
    printed = capsys.readouterr().out
    assert "poison" in printed.split("experiment", 1)[-1] and "summary.json" in printed
    # One page over the catalogue: a breach fails it, each name links to its own report.
    index = (tmp_path / "out" / "index.html").read_text()
    assert "FAIL" in index and "index.html" in printed
    for name in EXITS:
        assert f'<a href="{name}/report.html">{name}</a>' in index


def test_an_interrupted_catalogue_lists_what_never_started(
    fake_stack, monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(chaos.runner, "Run", _fake_run("poison"))
    assert _run(tmp_path, *EXITS) == 2
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["experiments"]
    assert [(r["exit"], r["outcome"]) for r in rows] == [
        (0, "pass"),
        (2, "interrupted"),
        (None, "not started"),
    ]
    assert "1 experiment(s) not started" in capsys.readouterr().out
    index = (tmp_path / "out" / "index.html").read_text()
    assert "1 not started" in index and "nc-consumer-ack-before-commit/report.html" not in index


def test_a_catalogue_that_passed_says_pass_on_its_page(fake_stack, monkeypatch, tmp_path):
    monkeypatch.setattr(chaos.runner, "Run", _fake_run(None))
    assert _run(tmp_path, "smoke-db-blip", "nc-consumer-ack-before-commit") == 0
    index = (tmp_path / "out" / "index.html").read_text()
    assert 'class="banner pass"' in index and "2 experiments: 2 passed, 0 did not" in index


def test_a_single_experiment_writes_no_summary(fake_stack, monkeypatch, tmp_path):
    monkeypatch.setattr(chaos.runner, "Run", _fake_run(None))
    assert _run(tmp_path, "poison") == 1
    assert not (tmp_path / "out" / "summary.json").exists()
