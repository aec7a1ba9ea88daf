"""`chaos rollback` finds the ledgers of a catalogue run and fails when a fault stays applied."""

from __future__ import annotations

from pathlib import Path

from chaos import actions
from chaos.ledger import Ledger
from harness.cli import main

POISON = {"action": "poison", "count": 1}  # its rollback is a no-op: the DLQ keeps them
DOWN = {"action": "down", "link": "api_postgres", "toxiproxy_url": "http://127.0.0.1:1"}


def _unreachable(_self, _fault) -> None:
    raise ConnectionError("fault proxy unreachable")


def _rollback(run_dir: Path, tmp_path: Path) -> int:
    return main(["chaos", "rollback", str(run_dir), "--state-dir", str(tmp_path / "stack")])


def test_a_catalogue_run_directory_rolls_back_the_ledgers_below_it(tmp_path, capsys):
    ledger = Ledger(tmp_path / "runs" / "db-down" / "faults.ledger")
    ledger.opened(POISON)
    assert _rollback(tmp_path / "runs", tmp_path) == 0
    assert "rolled back 1 fault(s)" in capsys.readouterr().out
    assert ledger.open_entries() == []


def test_a_directory_without_any_ledger_is_an_error(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert _rollback(tmp_path / "runs", tmp_path) == 2
    assert "no faults.ledger" in capsys.readouterr().err


def test_an_undo_that_fails_exits_2_and_stays_in_the_ledger(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(actions.Faults, "_rollback_down", _unreachable)
    ledger = Ledger(tmp_path / "run" / "faults.ledger")
    ledger.opened(DOWN)
    ledger.opened(POISON)
    assert _rollback(tmp_path / "run", tmp_path) == 2
    captured = capsys.readouterr()
    assert "rolled back 1 fault(s), 1 failed" in captured.out
    assert "1 fault(s) still applied" in captured.err
    assert [fault["action"] for _, fault in ledger.open_entries()] == ["down"]
