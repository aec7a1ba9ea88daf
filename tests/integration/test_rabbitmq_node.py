"""The session's RabbitMQ node runs with the scheduler count and WAL bound the harness chose."""

from __future__ import annotations

from pathlib import Path

import pytest

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
