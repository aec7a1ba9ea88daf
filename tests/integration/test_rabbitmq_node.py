"""The session's RabbitMQ node runs as the harness chose: schedulers, WAL bound, loopback only."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path

import pytest

from harness.stack.identity import pids_with_env
from harness.stack.rabbitmq import RabbitServer


def test_the_node_runs_with_the_chosen_schedulers(rabbit_instance):
    server = rabbit_instance.server
    if not isinstance(server, RabbitServer):
        pytest.skip("RECO_AMQP_URL points at an external broker")
    argv = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    flag = argv.index(b"-S")  # erl passes its "+S" on to beam.smp as "-S"
    assert argv[flag + 1] == f"{server.schedulers}:{server.schedulers}".encode()


def test_the_node_bounds_its_quorum_wal(rabbit_instance):
    server = rabbit_instance.server
    if not isinstance(server, RabbitServer):
        pytest.skip("RECO_AMQP_URL points at an external broker")
    result = server.ctl("eval", "application:get_env(ra, wal_max_size_bytes).")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{ok,67108864}"


def test_every_port_of_the_node_listens_on_loopback_only(rabbit_instance):
    server = rabbit_instance.server
    if not isinstance(server, RabbitServer):
        pytest.skip("RECO_AMQP_URL points at an external broker")
    listening = _listening_sockets()
    owned = [
        listening[inode]
        for pid in pids_with_env(*server.marker)  # the VM, epmd and their helpers
        for inode in _socket_inodes(pid)
        if inode in listening
    ]
    # AMQP, Erlang distribution and epmd: every listener of the node is in view.
    assert {server.port, server.dist_port, server.epmd_port} <= {port for _a, port in owned}
    assert [f"{address}:{port}" for address, port in owned if not _loopback(address)] == []


def _listening_sockets() -> dict[int, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """Socket inode -> (address, port) of every listening TCP socket, IPv4 and IPv6."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word of the address in host (little-endian) order.
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found[int(fields[9])] = (ipaddress.ip_address(raw), int(port, 16))
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)
