"""Data-plane conformance: each toxic's effect on real TCP traffic.

Timing assertions hold lower bounds firmly and upper bounds loosely, for busy 2-core machines.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from faultproxy_support import (
    Recorder,
    connect,
    echo,
    greet_and_close,
    listen_port,
    read_until_closed,
    recv_exactly,
    roundtrip,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)
SLACK = 0.002  # timers may fire a hair early relative to our clock


def timed(call) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


def stream_through(port: int, payload: bytes, timeout: float = 20.0) -> tuple[bytes, float]:
    """Send payload while a thread reads the echo; return (echo, seconds)."""
    got = bytearray()
    with connect(port, timeout=timeout) as sock:
        start = time.monotonic()
        reader = threading.Thread(
            target=lambda: got.extend(recv_exactly(sock, len(payload), timeout))
        )
        reader.start()
        sock.sendall(payload)
        reader.join(timeout + 1)
        return bytes(got), time.monotonic() - start


def test_no_toxics_keeps_every_byte_in_order(make_proxy):
    payload = os.urandom(4 * 1024 * 1024)
    echoed, _ = stream_through(listen_port(make_proxy()), payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


def test_bytes_sent_at_connect_are_kept_both_ways(make_proxy, tcp_server):
    """Bytes either side sends before the upstream dial completes reach the other side.

    uvloop starts reading an accepted or dialled socket right after connection_made, so the
    proxy sees them before its links exist; they must be held, not dropped.
    """

    def greet_then_echo(conn, stopping):
        conn.sendall(b"hello\n")
        echo(conn, stopping)

    port = listen_port(make_proxy(upstream=tcp_server(greet_then_echo).address))
    for _ in range(50):
        with connect(port) as sock:
            sock.sendall(b"first")
            assert recv_exactly(sock, 11) == b"hello\nfirst"


def test_noop_passes_data(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "noop")
    add_toxic(proxy["name"], "noop", stream="upstream")
    payload = os.urandom(300_000)
    echoed, _ = stream_through(listen_port(proxy), payload)
    assert echoed == payload


# -- latency ------------------------------------------------------------------------------


def test_latency_is_one_way_and_from_arrival(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "latency", attributes={"latency": 100})
    with connect(listen_port(proxy)) as sock:
        elapsed = [roundtrip(sock, b"ping") for _ in range(3)]
    assert min(elapsed) >= 0.1 - SLACK
    assert max(elapsed) < 0.6


def test_latency_both_ways_adds_up(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "latency", attributes={"latency": 100})
    add_toxic(proxy["name"], "latency", stream="upstream", attributes={"latency": 100})
    with connect(listen_port(proxy)) as sock:
        elapsed = roundtrip(sock, b"ping")
    assert 0.2 - SLACK <= elapsed < 0.8


def test_stacked_latency_toxics_add_up(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "latency", name="a", attributes={"latency": 100})
    add_toxic(proxy["name"], "latency", name="b", attributes={"latency": 100})
    with connect(listen_port(proxy)) as sock:
        elapsed = roundtrip(sock, b"ping")
    assert 0.2 - SLACK <= elapsed < 0.8


def test_jitter_stays_within_bounds(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "latency", attributes={"latency": 100, "jitter": 50})
    with connect(listen_port(proxy)) as sock:
        elapsed = [roundtrip(sock, b"j") for _ in range(8)]
    assert min(elapsed) >= 0.05 - SLACK
    assert max(elapsed) < 0.6
    assert max(elapsed) - min(elapsed) > 0.001


def test_latency_is_pipelined_not_per_chunk(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "latency", attributes={"latency": 200})
    payload = os.urandom(2 * 1024 * 1024)  # 64 chunks: 12.8 s if delayed one after another
    echoed, elapsed = stream_through(listen_port(proxy), payload)
    assert echoed == payload
    assert 0.2 - SLACK <= elapsed < 3.0


def test_toxic_added_and_removed_on_open_connection(api, make_proxy, add_toxic):
    proxy = make_proxy()
    with connect(listen_port(proxy)) as sock:
        assert roundtrip(sock, b"fast") < 0.25
        add_toxic(proxy["name"], "latency", attributes={"latency": 300})
        assert roundtrip(sock, b"slow") >= 0.3 - SLACK
        assert api.delete(f"/proxies/{proxy['name']}/toxics/latency_downstream").status_code == 204
        assert roundtrip(sock, b"fast again") < 0.25


def test_toxicity_zero_never_applies(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "latency", toxicity=0, attributes={"latency": 500})
    with connect(listen_port(proxy)) as sock:
        assert roundtrip(sock, b"x") < 0.4


def test_latency_update_releases_held_chunk_at_once(api, make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "latency", attributes={"latency": 3000})
    path = f"/proxies/{proxy['name']}/toxics/latency_downstream"
    with connect(listen_port(proxy)) as sock:
        start = time.monotonic()
        sock.sendall(b"held")
        time.sleep(0.2)
        assert api.patch(path, json={"attributes": {"latency": 0}}).status_code == 200
        assert recv_exactly(sock, 4, timeout=5) == b"held"
        assert time.monotonic() - start < 2.0


# -- bandwidth ------------------------------------------------------------------------------


def test_bandwidth_limits_rate_in_kb_of_1000_bytes(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "bandwidth", attributes={"rate": 100})
    payload = os.urandom(50_000)  # 0.5 s at 100 KB/s
    echoed, elapsed = stream_through(listen_port(proxy), payload)
    assert echoed == payload
    assert 0.45 <= elapsed < 4.0


def test_bandwidth_zero_stalls_until_removed_without_loss(api, make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "bandwidth", attributes={"rate": 0})
    payload = os.urandom(100_000)
    with connect(listen_port(proxy)) as sock:
        sock.sendall(payload)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        path = f"/proxies/{proxy['name']}/toxics/bandwidth_downstream"
        elapsed = timed(lambda: api.delete(path, timeout=5))
        assert elapsed < 1.0
        assert recv_exactly(sock, len(payload)) == payload


# -- slow_close, timeout, reset_peer ---------------------------------------------------------


def test_slow_close_delays_the_close(make_proxy, add_toxic, tcp_server):
    server = tcp_server(greet_and_close(b"hi"))
    proxy = make_proxy(upstream=server.address)
    add_toxic(proxy["name"], "slow_close", attributes={"delay": 300})
    start = time.monotonic()
    with connect(listen_port(proxy)) as sock:
        data, how = read_until_closed(sock, timeout=5)
    elapsed = time.monotonic() - start
    assert data == b"hi" and how == "eof"
    assert 0.3 - SLACK <= elapsed < 3.0


def test_timeout_zero_drops_data_and_removal_closes(api, make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "timeout", attributes={"timeout": 0})
    with connect(listen_port(proxy)) as sock:
        sock.sendall(b"dropped")
        sock.settimeout(0.4)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        path = f"/proxies/{proxy['name']}/toxics/timeout_downstream"
        assert timed(lambda: api.delete(path)) < 1.0
        data, how = read_until_closed(sock, timeout=3)
    assert data == b"" and how in ("eof", "reset")


def test_timeout_closes_after_quiet_period(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "timeout", attributes={"timeout": 300})
    start = time.monotonic()
    with connect(listen_port(proxy)) as sock:
        data, how = read_until_closed(sock, timeout=5)
    assert how in ("eof", "reset") and data == b""
    assert 0.3 - SLACK <= time.monotonic() - start < 3.0


def test_timeout_timer_restarts_on_every_chunk(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "timeout", stream="upstream", attributes={"timeout": 500})
    with connect(listen_port(proxy)) as sock:
        for _ in range(12):  # 1.2 s of traffic, each gap shorter than the timeout
            sock.sendall(b".")
            time.sleep(0.1)
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # still open: no EOF yet
        last = time.monotonic()
        _, how = read_until_closed(sock, timeout=5)
    assert how in ("eof", "reset")
    assert time.monotonic() - last >= 0.3


def test_reset_removes_timeout_and_closes_its_connections(api, make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "timeout", attributes={"timeout": 0})
    with connect(listen_port(proxy)) as sock:
        sock.sendall(b"x")
        time.sleep(0.1)
        assert api.post("/reset").status_code == 204
        _, how = read_until_closed(sock, timeout=3)
    assert how in ("eof", "reset")


def test_timeout_close_passes_through_later_toxics(make_proxy, add_toxic):
    """When the timer fires, the end of stream still goes through the toxics after it."""
    proxy = make_proxy()
    add_toxic(proxy["name"], "timeout", stream="upstream", attributes={"timeout": 300})
    add_toxic(proxy["name"], "slow_close", stream="upstream", attributes={"delay": 1000})
    start = time.monotonic()
    with connect(listen_port(proxy)) as sock:
        data, how = read_until_closed(sock, timeout=6)
    assert how in ("eof", "reset") and data == b""
    assert 1.3 - SLACK <= time.monotonic() - start < 4.0


def test_timeout_removal_close_passes_through_later_toxics(api, make_proxy, add_toxic):
    proxy = make_proxy()
    with connect(listen_port(proxy)) as sock:
        roundtrip(sock, b"linked")  # the links exist, so the toxics below are on this one
        add_toxic(proxy["name"], "timeout", attributes={"timeout": 0})
        add_toxic(proxy["name"], "slow_close", attributes={"delay": 500})
        path = f"/proxies/{proxy['name']}/toxics/timeout_downstream"
        start = time.monotonic()
        assert api.delete(path).status_code == 204
        data, how = read_until_closed(sock, timeout=5)
    assert how in ("eof", "reset") and data == b""
    assert 0.5 - SLACK <= time.monotonic() - start < 3.0


def test_latency_before_timeout_can_be_removed_without_hanging(api, make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "latency", attributes={"latency": 1000})
    add_toxic(proxy["name"], "timeout", attributes={"timeout": 0})
    with connect(listen_port(proxy)) as sock:
        sock.sendall(b"x" * 1000)
        time.sleep(0.1)
        path = f"/proxies/{proxy['name']}/toxics/latency_downstream"
        assert timed(lambda: api.delete(path)) < 1.0
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)


def test_reset_peer_sends_rst_on_first_data(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "reset_peer", attributes={"timeout": 0})
    with connect(listen_port(proxy)) as sock:
        sock.sendall(b"trigger")
        data, how = read_until_closed(sock, timeout=3)
    assert how == "reset" and data == b""


def test_reset_peer_waits_its_timeout(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "reset_peer", attributes={"timeout": 300})
    with connect(listen_port(proxy)) as sock:
        start = time.monotonic()
        sock.sendall(b"trigger")
        _, how = read_until_closed(sock, timeout=5)
    assert how == "reset"
    assert 0.3 - SLACK <= time.monotonic() - start < 3.0


def test_reset_peer_with_toxicity_zero_still_turns_a_close_into_rst(
    make_proxy, add_toxic, tcp_server
):
    """Go sets SO_LINGER 0 whenever the chain holds a reset_peer at connect (issue #603)."""

    def echo_once_and_close(conn, stopping):
        conn.sendall(conn.recv(65536))

    proxy = make_proxy(upstream=tcp_server(echo_once_and_close).address)
    add_toxic(proxy["name"], "reset_peer", toxicity=0, attributes={"timeout": 0})
    with connect(listen_port(proxy)) as sock:
        assert roundtrip(sock, b"passes") < 1.0  # the toxic itself never acts
        data, how = read_until_closed(sock, timeout=3)
    assert data == b"" and how == "reset"


def test_reset_peer_needs_traffic(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "reset_peer", attributes={"timeout": 0})
    with connect(listen_port(proxy)) as sock:
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)


# -- slicer, limit_data -----------------------------------------------------------------------


def test_slicer_cuts_into_delayed_pieces_without_changing_bytes(make_proxy, add_toxic, tcp_server):
    recorder = Recorder()
    server = tcp_server(recorder)
    proxy = make_proxy(upstream=server.address)
    attributes = {"average_size": 1, "size_variation": 0, "delay": 10_000}
    add_toxic(proxy["name"], "slicer", stream="upstream", attributes=attributes)
    payload = b"abcdefghijklmnopqrstuvwx"
    with connect(listen_port(proxy)) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        assert wait_for(lambda: recorder.data == payload, timeout=5)
        elapsed = time.monotonic() - start
    assert elapsed >= 23 * 0.01 - SLACK  # 24 one-byte pieces, 10 ms apart
    assert len(recorder.pieces) > 4


def test_slicer_delays_after_every_piece_even_a_chunk_of_one(make_proxy, add_toxic):
    """Go waits delay after each piece, the last too: small chunks are spaced by it as well."""
    proxy = make_proxy()
    attributes = {"average_size": 16, "size_variation": 0, "delay": 200_000}
    add_toxic(proxy["name"], "slicer", stream="upstream", attributes=attributes)
    with connect(listen_port(proxy)) as sock:
        # One write at a time (each echoed before the next), so each is a chunk of one piece.
        elapsed = [roundtrip(sock, b"%02d" % n) for n in range(5)]
    assert sum(elapsed) >= 4 * 0.2 - SLACK, elapsed
    assert sum(elapsed) < 4.0


def test_slicer_with_variation_keeps_bytes(make_proxy, add_toxic):
    proxy = make_proxy()
    attributes = {"average_size": 100, "size_variation": 40, "delay": 0}
    add_toxic(proxy["name"], "slicer", attributes=attributes)
    payload = os.urandom(200_000)
    echoed, _ = stream_through(listen_port(proxy), payload)
    assert echoed == payload


def test_api_answers_while_a_slicer_without_delay_cuts_one_byte_pieces(
    api, make_proxy, add_toxic, tcp_server
):
    payload = os.urandom(512 * 1024)
    proxy = make_proxy(upstream=tcp_server(greet_and_close(payload)).address)
    add_toxic(proxy["name"], "slicer", attributes={"average_size": 1})
    got = bytearray()
    started = threading.Event()

    def read_all() -> None:
        with connect(listen_port(proxy), timeout=30) as sock:
            while piece := sock.recv(65536):
                got.extend(piece)
                started.set()
        started.set()

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    assert started.wait(10)
    waits = [timed(lambda: api.get("/version", timeout=10).raise_for_status()) for _ in range(3)]
    reader.join(30)
    assert bytes(got) == payload
    assert max(waits) < 1.0, waits


def test_limit_data_truncates_then_closes(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "limit_data", attributes={"bytes": 10})
    with connect(listen_port(proxy)) as sock:
        sock.sendall(b"0123456789abcdefghij")
        data, how = read_until_closed(sock, timeout=3)
    assert data == b"0123456789" and how == "eof"


def test_limit_data_zero_closes_on_first_chunk(make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "limit_data", attributes={"bytes": 0})
    with connect(listen_port(proxy)) as sock:
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # not closed at connect
        sock.sendall(b"x")
        data, how = read_until_closed(sock, timeout=3)
    assert data == b"" and how in ("eof", "reset")


def test_limit_data_count_survives_update(api, make_proxy, add_toxic):
    proxy = make_proxy()
    add_toxic(proxy["name"], "limit_data", attributes={"bytes": 10})
    with connect(listen_port(proxy)) as sock:
        assert roundtrip(sock, b"123456") < 1
        path = f"/proxies/{proxy['name']}/toxics/limit_data_downstream"
        assert api.patch(path, json={"attributes": {"bytes": 14}}).status_code == 200
        sock.sendall(b"abcdefghij")
        data, how = read_until_closed(sock, timeout=3)
    assert data == b"abcdefgh" and how == "eof"


# -- metrics --------------------------------------------------------------------------------


def test_metrics_count_bytes_while_connection_is_open(api, make_proxy, ours):
    proxy = make_proxy()
    with connect(listen_port(proxy)) as sock:
        roundtrip(sock, b"x" * 1234)
        text = api.get("/metrics").text
        labels = f'direction="upstream",listener="{proxy["listen"]}",proxy="{proxy["name"]}"'
        lines = [line for line in text.splitlines() if labels in line]
        received = [ln for ln in lines if ln.startswith("toxiproxy_proxy_received_bytes_total")]
        sent = [ln for ln in lines if ln.startswith("toxiproxy_proxy_sent_bytes_total")]
        assert received and received[0].endswith(" 1234")
        assert sent and sent[0].endswith(" 1234")
        current = f'faultproxy_proxy_connections_current{{proxy="{proxy["name"]}"}} 1'
        assert current in text
