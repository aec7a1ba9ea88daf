"""The DLQ tool's message handling and exit codes: routing key, replay headers, summaries."""

from __future__ import annotations

import socket
import types

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
