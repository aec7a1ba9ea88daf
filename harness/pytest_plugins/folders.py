"""Apply markers by test folder and keep unit tests off the network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

FOLDER_MARKERS = {
    "unit": "unit",
    "integration": "integration",
    "contract": "contract",
    "e2e": "e2e",
    "chaos": "chaos",
    "faultproxy": "faultproxy",
    "benchmarks": "benchmarks",
    "load": "load",
    "report": "report",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the tier named by its folder under tests/."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "tests" not in parts:
            continue
        tier = parts[parts.index("tests") + 1] if parts.index("tests") + 1 < len(parts) else ""
        marker = FOLDER_MARKERS.get(tier)
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


class _NoNetwork(RuntimeError):
    """Raised when a unit test opens a network connection."""


@pytest.fixture(autouse=True)
def _unit_tests_have_no_sockets(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Fail any unit test that connects a socket: unit tests must stay pure."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return

    def refuse(*_args, **_kwargs):
        raise _NoNetwork("unit tests must not open network connections")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield
