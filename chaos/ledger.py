"""A durable ledger of applied faults, so every fault is rolled back even if the runner dies.

Each fault is written (with everything needed to undo it) *before* it is applied and marked
undone after its rollback. Whoever finds open entries — the runner's own cleanup, the guardian
process watching the runner, or `reco-harness chaos rollback` — undoes them.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any


class Ledger:
    """Append-only JSON lines: {"id", "op": "apply"|"undo", "fault": {...}, "t"}."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def opened(self, fault: dict[str, Any]) -> str:
        """Record a fault about to be applied; return its ledger id."""
        entry_id = uuid.uuid4().hex
        self._append({"id": entry_id, "op": "apply", "fault": fault, "t": time.time()})
        return entry_id

    def closed(self, entry_id: str) -> None:
        """Record that a fault was rolled back."""
        self._append({"id": entry_id, "op": "undo", "t": time.time()})

    def open_entries(self) -> list[tuple[str, dict[str, Any]]]:
        """Faults applied and not yet undone, most recent first (undo in reverse order)."""
        if not self.path.exists():
            return []
        applied: dict[str, dict[str, Any]] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line from a crash: that fault was never applied
            if entry.get("op") == "apply":
                applied[entry["id"]] = entry["fault"]
            elif entry.get("op") == "undo":
                applied.pop(entry["id"], None)
        return list(reversed(applied.items()))
