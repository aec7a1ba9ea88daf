"""Hooks module for the `st` CLI, loaded with `SCHEMATHESIS_HOOKS=harness.contract.st_hooks`.

It installs the allow-list filter and the steering of valid event batches (steering.py).
The allow-list comes from RECO_CONTRACT_ALLOWLIST; each dropped failure is appended as one JSON
line to RECO_CONTRACT_ALLOWLIST_LOG so `reco-harness contract` can count allow-listed findings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import schemathesis

from harness.contract.allowlist import Entry, load
from harness.contract.hooks import failure_filter
from harness.contract.paths import ALLOWLIST_PATH
from harness.contract.steering import install as install_steering

# This module is imported only by the `st` subprocess, so reading its environment here is the
# documented hand-over from the parent command, not configuration of the service.
_ALLOWLIST = load(Path(os.environ.get("RECO_CONTRACT_ALLOWLIST", ALLOWLIST_PATH)))
_LOG = os.environ.get("RECO_CONTRACT_ALLOWLIST_LOG")


def _record(entry: Entry, failure: Any, case: Any, response: Any) -> None:
    if not _LOG:
        return
    line = {
        "entry": entry.id,
        "code": getattr(failure, "code", None),
        "operation": getattr(failure, "operation", None),
        "status": response.status_code,
        "case_id": getattr(case, "id", None),
    }
    with open(_LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


schemathesis.hook(failure_filter(_ALLOWLIST, _record))
install_steering(schemathesis.hook)
