"""Workers back off as documented: on schedule, and with their other connection kept alive.

The backoff starts at 0.1 s and doubles (half fixed, half jitter), so three seconds hold at
most seven attempts. The relay once retried thousands of times a second: its idle wait
returns at once after it lost its connections, and the backoff waited through it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time

import pytest

from harness.bench.workers import make_events, seed_outbox
from harness.pytest_plugins import workers as plugin
from harness.pytest_plugins.workers import (
    WorkerProcess,
    applied_count,
    assert_audit,
    drain_relay,
    pending_rows,
    wait_until,
)
from workers.amqp import AmqpError, Link

worker_procs = plugin.worker_procs
fault_proxy = plugin.fault_proxy
refused_port = plugin.refused_port

WINDOW_S = 3.0
MOST_ATTEMPTS = 10  # seven by the schedule, with room for a slow start


def _failures(worker: WorkerProcess) -> list[dict]:
    return worker.logged("worker iteration failed; backing off")


@pytest.mark.parametrize(
    ("kind", "refused"),
    [("relay", "database"), ("relay", "broker"), ("consumer", "broker")],
)
def test_a_refused_server_is_retried_on_the_backoff_schedule(
    settings, tmp_path, worker_procs, refused_port, kind, refused
):
    if refused == "database":
        changed = {"database_url": f"postgresql://reco:x@127.0.0.1:{refused_port}/reco"}
    else:
        changed = {"amqp_url": f"amqp://guest:guest@127.0.0.1:{refused_port}/%2F"}
    worker = WorkerProcess.start(kind, dataclasses.replace(settings, **changed), tmp_path)
    worker_procs.append(worker)
    wait_until(lambda: _failures(worker), 15, f"the {kind} to fail its first iteration")
    first = time.monotonic()
    time.sleep(WINDOW_S)  # the measurement is how many attempts fit in this window
    attempts = len(_failures(worker))
    assert 2 <= attempts <= MOST_ATTEMPTS, (attempts, time.monotonic() - first)
    assert worker.healthy()  # backing off is alive
    assert worker.stop(timeout=15) == 0


def test_the_relay_keeps_its_broker_link_alive_through_a_database_backoff(
    settings, pg_instance, tmp_path, worker_procs, fault_proxy
):
    """Heartbeats keep flowing while the relay waits out a database outage.

    With 1 s heartbeats the broker drops a client silent for about two seconds; the backoff
    here grows to 4 s, so an unserviced link would be closed and reopened.
    """
    created = fault_proxy.create_proxy("relay_db", f"{pg_instance.host}:{pg_instance.port}")
    port = created["listen"].rsplit(":", 1)[1]
    proxied = dataclasses.replace(
        settings,
        database_url=settings.database_url.replace(f":{pg_instance.port}/", f":{port}/"),
        amqp_heartbeat_s=1,
        backoff_max_s=4.0,
    )
    relay = WorkerProcess.start("relay", proxied, tmp_path)
    worker_procs.append(relay)
    seed_outbox(settings.database_url, make_events(20, users=5), with_events=True)
    wait_until(lambda: pending_rows(settings.database_url) == 0, 30, "the first drain")

    with fault_proxy.down("relay_db"):
        wait_until(lambda: len(_failures(relay)) >= 6, 30, "backoffs of several seconds")
    seed_outbox(settings.database_url, make_events(20, users=5), with_events=True)
    wait_until(lambda: pending_rows(settings.database_url) == 0, 30, "the drain after the outage")
    connected = relay.logged("connected to broker")
    assert len(connected) == 1, [r.get("msg") for r in relay.log_records()][-30:]
    assert relay.stop(timeout=15) == 0


def test_a_flapping_broker_link_backs_the_consumer_off_without_burning_deliveries(
    settings, rabbit_instance, tmp_path, worker_objects, worker_procs, fault_proxy
):
    """Each reconnect hands every unacked delivery back, one delivery attempt each.

    The link here dies a few deliveries after each connect. Reopening it at once burned the
    queue's delivery limit (20) within seconds and dead-lettered valid messages; on the
    backoff schedule a few seconds hold a handful of reconnects.
    """
    upstream = f"{rabbit_instance.host}:{rabbit_instance.port}"
    created = fault_proxy.create_proxy("consumer_amqp", upstream)
    port = created["listen"].rsplit(":", 1)[1]
    proxied = dataclasses.replace(
        settings, amqp_url=settings.amqp_url.replace(f":{rabbit_instance.port}/", f":{port}/")
    )
    assert proxied.amqp_url != settings.amqp_url
    seed_outbox(settings.database_url, make_events(300, users=20), with_events=True)
    drain_relay(worker_objects.relay(settings))
    fault_proxy.add_toxic("consumer_amqp", "limit_data", stream="downstream", bytes=6_000)
    consumer = WorkerProcess.start("consumer", proxied, tmp_path)
    worker_procs.append(consumer)
    wait_until(lambda: len(_failures(consumer)) >= 2, 15, "the link to drop")
    time.sleep(WINDOW_S)  # the measurement is how many reconnects fit in this window
    fault_proxy.remove_toxic("consumer_amqp", "limit_data_downstream")
    connects = consumer.logged("connected to broker")
    assert len(connects) <= MOST_ATTEMPTS, len(connects)
    wait_until(lambda: applied_count(settings.database_url) == 300, 60, "the drain after it")
    assert_audit(settings)  # nothing dead-lettered, lost or applied twice
    assert consumer.stop(timeout=15) == 0


def test_a_connection_closed_before_the_handshake_is_not_called_a_protocol_mismatch(settings):
    """pika reports a peer that closes at once as IncompatibleProtocolError; say what it is."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def close_each() -> None:
        with contextlib.suppress(OSError):
            for _ in range(3):
                server.accept()[0].close()

    threading.Thread(target=close_each, daemon=True).start()
    refused = dataclasses.replace(settings, amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F")
    try:
        with pytest.raises(AmqpError, match="closed before the handshake ended"):
            Link(refused, "probe").open()
    finally:
        server.close()
