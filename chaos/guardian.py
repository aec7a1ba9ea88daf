"""A watchdog that rolls back every open fault when the chaos runner dies (even by SIGKILL).

python -m chaos.guardian --ledger RUN/faults.ledger --state-dir .harness --pid RUNNER_PID
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from chaos.ledger import Ledger
from harness.stack.procs import pid_alive

if TYPE_CHECKING:
    from chaos.actions import Faults

POLL_S = 0.2


def rollback_open(ledger: Ledger, faults: Faults, log=print) -> int:
    """Undo every open fault in ``ledger``, most recent first; return how many were undone.

    ``faults`` wraps the caller's own Stack, so restarts it makes are recorded where the
    caller will read them next.
    """
    undone = 0
    for entry_id, fault in ledger.open_entries():
        try:
            faults.rollback(fault)
        except Exception as exc:  # noqa: BLE001 - keep undoing the others; report this one
            log(f"rollback of {fault.get('action')} failed: {exc}")
            continue
        ledger.closed(entry_id)
        undone += 1
    return undone


def main(argv: list[str] | None = None) -> int:
    """Wait for the runner to exit (or finish cleanly), then undo what it left applied."""
    parser = argparse.ArgumentParser(prog="python -m chaos.guardian")
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--max-hours", type=float, default=12.0)
    args = parser.parse_args(argv)
    done_marker = args.ledger.with_suffix(".done")
    deadline = time.monotonic() + args.max_hours * 3600
    while pid_alive(args.pid) and not done_marker.exists() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if done_marker.exists():
        return 0
    from chaos.actions import Faults
    from harness.stack import Stack

    undone = rollback_open(Ledger(args.ledger), Faults(Stack(args.state_dir)))
    print(f"guardian: runner {args.pid} gone; rolled back {undone} fault(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
