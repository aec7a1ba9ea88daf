"""The DLQ tool's message handling and exit codes: routing key, replay headers, summaries."""

from __future__ import annotations

import os
import signal
import socket
import types

import orjson
import pika
import pika.exceptions
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from workers import dlq
from workers.dlq import describe, original_routing_key, replay_properties


def _method(routing_key="dead.key", redelivered=False):
    return types.SimpleNamespace(routing_key=routing_key, redelivered=redelivered)


def test_original_routing_key_prefers_our_header_then_x_death_then_the_delivery():
    assert original_routing_key(_method(), {"x-reco-original-routing-key": "a.b"}) == "a.b"
    x_death = {"x-death": [{"reason": "delivery_limit", "routing-keys": ["c.d"]}]}
    assert original_routing_key(_method(), x_death) == "c.d"
    assert original_routing_key(_method("e.f"), {}) == "e.f"


def test_replayed_copy_drops_dead_letter_headers_and_counts_replays():
    props = pika.BasicProperties(
        message_id="m1",
        type="interaction.recorded",
        correlation_id="c1",
        headers={
            "request_id": "r1",
            "x-reco-dead-reason": "invalid kind",
            "x-reco-dead-at": "2026-01-01T00:00:00+00:00",
            "x-reco-original-routing-key": "k",
            "x-reco-original-exchange": "ex",
            "x-death": [{"reason": "rejected"}],
            "x-first-death-reason": "rejected",
            "x-reco-replays": 2,
        },
    )
    copy = replay_properties(props)
    assert copy.headers == {"request_id": "r1", "x-reco-replays": 3}
    assert (copy.message_id, copy.type, copy.correlation_id) == ("m1", "interaction.recorded", "c1")
    assert copy.delivery_mode == 2


def test_summary_names_the_reason_from_either_dead_letter_path():
    ours = pika.BasicProperties(message_id="m", headers={"x-reco-dead-reason": "undecodable"})
    assert describe(_method(), ours)["reason"] == "undecodable"
    broker = pika.BasicProperties(headers={"x-death": [{"reason": "delivery_limit"}]})
    summary = describe(_method(redelivered=True), broker)
    assert summary["reason"] == "delivery_limit" and summary["redelivered"] is True
    assert summary["replays"] == 0


def _refuse(exc):
    def connect(_params):
        raise exc

    return connect


@pytest.mark.parametrize(
    "exc",
    [
        socket.gaierror(-2, "Name or service not known"),
        AMQPConnectorStackTimeout("Timeout during AMQP handshake"),
        pika.exceptions.AMQPConnectionError("refused"),
    ],
)
def test_an_unreachable_or_silent_broker_is_a_clear_exit_2(monkeypatch, capsys, exc):
    monkeypatch.setenv("RECO_AMQP_URL", "amqp://guest:guest@broker.invalid:5672/%2F")
    monkeypatch.setattr(dlq.pika, "BlockingConnection", _refuse(exc))
    assert dlq.main(["list"]) == 2
    assert capsys.readouterr().err.startswith("dlq: broker error: ")


def test_a_malformed_broker_url_is_a_configuration_error(monkeypatch, capsys):
    monkeypatch.setenv("RECO_AMQP_URL", "amqp://guest:guest@127.0.0.1:notaport/%2F")
    monkeypatch.setattr(dlq.pika, "BlockingConnection", _refuse(AssertionError("connected")))
    assert dlq.main(["replay"]) == 2
    assert capsys.readouterr().err.startswith("dlq: configuration error: RECO_AMQP_URL: ")


class _FakeChannel:
    """Hands out dead letters; the first publish delivers ``signum`` to this process."""

    def __init__(self, count: int, signum: int):
        self.queue = [f"m{n}" for n in range(count)]
        self.signum = signum
        self.published: list[str] = []
        self.acked: list[int] = []

    def confirm_delivery(self):
        pass

    def queue_declare(self, _queue, passive):
        return types.SimpleNamespace(method=types.SimpleNamespace(message_count=len(self.queue)))

    def basic_get(self, _queue, auto_ack):
        if not self.queue:
            return None, None, None
        tag = len(self.published) + 1
        props = pika.BasicProperties(message_id=self.queue.pop(0), headers={})
        method = types.SimpleNamespace(routing_key="k", redelivered=False, delivery_tag=tag)
        return method, props, b"{}"

    def basic_publish(self, _exchange, _key, _body, props, _mandatory):
        self.published.append(props.message_id)
        os.kill(os.getpid(), self.signum)  # arrives while the confirm is awaited

    def basic_ack(self, tag):
        self.acked.append(tag)


class _FakeConnection:
    def __init__(self, channel):
        self._channel, self.is_open = channel, True

    def channel(self):
        return self._channel

    def close(self):
        self.is_open = False


class _Unhandled(Exception):
    pass


def _unhandled(signum, _frame):
    raise _Unhandled(signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_replay_after_the_message_in_hand(monkeypatch, capsys, signum):
    channel = _FakeChannel(5, signum)
    monkeypatch.setenv("RECO_AMQP_URL", "amqp://guest:guest@broker.invalid:5672/%2F")
    monkeypatch.setattr(dlq.pika, "BlockingConnection", lambda _params: _FakeConnection(channel))
    before = signal.signal(signum, _unhandled)  # without the tool's handler: fail, not die
    try:
        assert dlq.main(["replay", "--limit", "5"]) == 128 + signum
        assert signal.getsignal(signum) is _unhandled
    finally:
        signal.signal(signum, before)
    assert channel.published == ["m0"] and channel.acked == [1]  # published and acked, no more
    summary = orjson.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary == {
        "command": "replay",
        "messages": 1,
        "failures": 0,
        "stopped_by": signal.Signals(signum).name,
    }


@pytest.mark.parametrize("argv", [["drop"], ["list", "--id", "e-1"], ["replay", "--id", "e-1"]])
def test_drop_and_its_ids_go_together(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        dlq.main(argv)
    assert stopped.value.code == 2
    assert "--id goes with drop" in capsys.readouterr().err
