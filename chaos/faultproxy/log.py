"""JSON-line logs on stdout, filtered by LOG_LEVEL like the Go server's zerolog."""

from __future__ import annotations

import datetime
import json
import os
import sys

LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "error": 4, "fatal": 5, "panic": 6}
_threshold = LEVELS.get(os.environ.get("LOG_LEVEL", "info").lower(), LEVELS["info"])


def set_level(name: str) -> None:
    """Change the lowest level written."""
    global _threshold
    _threshold = LEVELS.get(name.lower(), LEVELS["info"])


def emit(level: str, message: str, **fields: object) -> None:
    """Write one log line if level passes the threshold."""
    if LEVELS[level] < _threshold:
        return
    record = {"level": level, **fields}
    record["time"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    record["message"] = message
    try:
        sys.stdout.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # A closed stdout must never take the proxy down.


def debug(message: str, **fields: object) -> None:
    emit("debug", message, **fields)


def info(message: str, **fields: object) -> None:
    emit("info", message, **fields)


def warn(message: str, **fields: object) -> None:
    emit("warn", message, **fields)


def error(message: str, **fields: object) -> None:
    emit("error", message, **fields)
