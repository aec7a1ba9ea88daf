"""Free loopback ports for servers, outside the ports the kernel hands to outgoing connections."""

from __future__ import annotations

import collections
import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL = (32768, 60999)
PORT_PICKS = 64
_recent: collections.deque[int] = collections.deque(maxlen=256)


def ephemeral_range() -> tuple[int, int]:
    """The local ports the kernel hands to outgoing connections (inclusive bounds)."""
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on ``host``, outside the kernel's ephemeral range when possible.

    Servers here come back on the port they had: a killed app restarts on it (clients keep
    their URL) and a fault proxy re-binds it after a "down". An ephemeral port can meanwhile
    become the local port of any outgoing connection (a busy host holds tens of thousands
    in TIME_WAIT), and the restart fails with "address already in use". A port below the
    range is never handed out that way. The OS picks one when no such port is free.
    """
    low, high = ephemeral_range()
    # The wider stretch of unprivileged ports outside [low, high], clear of the low ports
    # that well-known services use.
    first, last = max((max(10_000, low // 2), low - 1), (high + 1, 65_535), key=_width)
    if _width((first, last)) >= PORT_PICKS:
        for port in random.sample(range(first, last + 1), PORT_PICKS):
            # Not one handed out a moment ago: callers often ask for several before binding any.
            if port not in _recent and _bindable(host, port):
                _recent.append(port)
                return port
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _width(span: tuple[int, int]) -> int:
    return span[1] - span[0] + 1


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(host: str, port: int) -> bool:
    # No SO_REUSEADDR: a socket in TIME_WAIT on the port counts as taken, as it would for
    # a client's connect() and for a server that does not set the option.
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
