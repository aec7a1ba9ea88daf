"""Topology names and queue arguments, and the order in which they are declared."""

from __future__ import annotations

import dataclasses

import pytest

from service.settings import Settings
from workers.metrics import Health
from workers.relay import failure_kind
from workers.topology import declare, topology


def _settings(**changes) -> Settings:
    return dataclasses.replace(Settings(), amqp_namespace="ns1", **changes)


def test_names_are_prefixed_by_the_namespace():
    topo = topology(_settings())
    assert (topo.exchange, topo.queue, topo.dlx, topo.dlq) == (
        "ns1.events",
        "ns1.features",
        "ns1.events.dlx",
        "ns1.features.dlq",
    )
    assert topo.binding_key == "interaction.#"


def test_feature_queue_is_quorum_with_explicit_limit_and_safe_dead_lettering():
    args = topology(_settings(delivery_limit=7, queue_max_length=1000)).queue_arguments
    assert args == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": "ns1.events.dlx",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-max-length": 1000,
    }
    assert topology(_settings()).dlq_arguments == {"x-queue-type": "quorum"}


def test_no_length_limit_when_switched_off():
    assert "x-max-length" not in topology(_settings(queue_max_length=0)).queue_arguments


def test_a_delivery_limit_below_one_is_refused():
    with pytest.raises(ValueError):
        topology(_settings(delivery_limit=0))


class RecordingChannel:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def method(*args, callback, **kwargs):
            self.calls.append((name, args, kwargs))
            callback(name)

        return method


class FakeLink:
    def __init__(self):
        self.channel = RecordingChannel()

    def require(self):
        return self.channel

    def call(self, start, timeout):
        box = []
        start(box.append)
        return box[0]


def test_declare_creates_the_dead_letter_path_before_the_queue_that_uses_it():
    link = FakeLink()
    topo = topology(_settings())
    declare(link, topo, timeout=1)
    calls = [(name, args) for name, args, _ in link.channel.calls]
    assert calls == [
        ("exchange_declare", ("ns1.events", "topic")),
        ("exchange_declare", ("ns1.events.dlx", "topic")),
        ("queue_declare", ("ns1.features.dlq",)),
        ("queue_bind", ("ns1.features.dlq", "ns1.events.dlx", "#")),
        ("queue_declare", ("ns1.features",)),
        ("queue_bind", ("ns1.features", "ns1.events", "interaction.#")),
    ]
    assert all(kw.get("durable", True) for _, _, kw in link.channel.calls)
    assert link.channel.calls[4][2]["arguments"] == topo.queue_arguments


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("unroutable: 312 NO_ROUTE", "unroutable"),
        ("nacked by broker", "nacked"),
        ("confirm timeout", "timeout"),
        ("link closed: ConnectionResetError()", "closed"),
    ],
)
def test_failure_reasons_map_to_metric_labels(reason, kind):
    assert failure_kind(reason) == kind


def test_health_turns_503_when_the_loop_stops_beating():
    now = [0.0]
    health = Health(stall_after_s=60, clock=lambda: now[0])
    health.beat(failures=0)
    now[0] = 59
    assert health.status()[0] == 200
    now[0] = 61
    status, body = health.status()
    assert status == 503 and body["status"] == "stalled" and body["failures"] == 0


def test_loop_failures_are_classified_for_the_error_counters():
    import pika.exceptions
    import psycopg2

    from workers.amqp import AmqpError
    from workers.metrics import error_kind

    assert error_kind(psycopg2.OperationalError("down")) == "db"
    assert error_kind(AmqpError("gone")) == "amqp"
    assert error_kind(pika.exceptions.StreamLostError("lost")) == "amqp"
    assert error_kind(ValueError("bug")) == "other"
