"""free_port() keeps servers off the ports the kernel hands to outgoing connections."""

from __future__ import annotations

import socket

from harness import ports
from harness.ports import ephemeral_range, free_port


def test_ports_come_from_outside_the_ephemeral_range():
    low, high = ephemeral_range()
    ports = {free_port() for _ in range(20)}
    assert all(not low <= port <= high for port in ports), (ports, low, high)
    assert len(ports) > 1  # picked at random, not one fixed port
    for port in ports:  # free when chosen
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_held_by_a_socket_is_never_chosen(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, taken - 1))
        # Below the "range" only 10,000..1,023 (nothing); above it, the held port comes first.
        monkeypatch.setattr(ports.random, "sample", lambda pool, k: [taken, *list(pool)[1:k]])
        assert free_port() != taken


def test_the_os_chooses_when_no_port_lies_outside_the_range(monkeypatch):
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65_535))
    assert 0 < free_port() <= 65_535


def test_the_range_is_read_from_the_kernel_file(tmp_path, monkeypatch):
    path = tmp_path / "ip_local_port_range"
    path.write_text("40000\t50000\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", path)
    assert ephemeral_range() == (40000, 50000)
    path.write_text("garbage")
    assert ephemeral_range() == ports.LINUX_EPHEMERAL
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert ephemeral_range() == ports.LINUX_EPHEMERAL


def test_ipv6_loopback_is_served_too():
    port = free_port("::1")
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", port))


def test_a_port_is_not_handed_out_twice_in_a_row(monkeypatch):
    # Callers ask for several ports before binding any (RabbitMQ's node, dist and epmd ports).
    monkeypatch.setattr(ports.random, "sample", lambda pool, k: [20_000, 20_001])
    monkeypatch.setattr(ports, "_recent", ports.collections.deque(maxlen=256))
    monkeypatch.setattr(ports, "_bindable", lambda host, port: True)
    assert [free_port(), free_port()] == [20_000, 20_001]
