"""JSON logs for the workers, one object per line on stderr (the service's formatter)."""

from __future__ import annotations

import logging
import sys

from service import logs


class JsonFormatter(logs.JsonFormatter):
    """The service's JSON lines, plus each exception's message (``error_detail``)."""

    error_detail = True


def configure(level: str = "INFO") -> None:
    """Send the 'reco' loggers to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("reco")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False
