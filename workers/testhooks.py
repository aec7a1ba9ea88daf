"""Test-only pause points: stall at a precise step so a test can SIGKILL the process there."""

from __future__ import annotations

import logging
import sys
import time

from service.settings import Settings

log = logging.getLogger("reco.worker")
PAUSE_SECONDS = 60.0  # bounded: a test that forgets to kill the process only loses a minute


def pause_point(settings: Settings, name: str, **details: object) -> None:
    """Log ``test pause`` and sleep when the test-only fault ``name`` is on (RECO_ENV=test)."""
    if not settings.test_fault(name):
        return
    log.warning("test pause", extra={"pause_point": name, **details})
    for handler in logging.getLogger("reco").handlers:
        handler.flush()
    sys.stderr.flush()
    time.sleep(PAUSE_SECONDS)
