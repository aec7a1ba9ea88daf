"""Topology names and queue arguments, and the order in which they are declared."""

from __future__ import annotations

import dataclasses

import pika.exceptions
import pytest

from service.settings import Settings
from workers.amqp import AmqpError, Link
from workers.metrics import Health
from workers.relay import failure_kind
from workers.topology import DLQ_DELIVERY_LIMIT, declare, topology


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


def test_dlq_has_an_explicit_unreachable_delivery_limit():
    # Without one, RabbitMQ 4.x drops a dead letter after 20 lists or failed replays (the DLQ
    # has no dead-letter target); -1 ("no limit" on 4.x) is refused by 3.10.
    args = topology(_settings(delivery_limit=7)).dlq_arguments
    assert args == {"x-queue-type": "quorum", "x-delivery-limit": DLQ_DELIVERY_LIMIT}
    assert 10**9 < DLQ_DELIVERY_LIMIT < 2**31


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
    assert link.channel.calls[2][2]["arguments"] == topo.dlq_arguments
    assert link.channel.calls[4][2]["arguments"] == topo.queue_arguments


class RefusingLink(FakeLink):
    """The broker closes the channel on the first DLQ declaration with ``reply_text``."""

    def __init__(self, reply_text: str):
        super().__init__()
        self.reply_text, self.error, self.reopened = reply_text, None, 0

    def call(self, start, timeout):
        calls = len(self.channel.calls)
        result = super().call(start, timeout)
        name, args, kwargs = self.channel.calls[calls]
        if name == "queue_declare" and kwargs.get("arguments") and args[0].endswith(".dlq"):
            self.error = pika.exceptions.ChannelClosedByBroker(406, self.reply_text)
            raise AmqpError(f"operation timed out: {self.error!r}")
        return result

    def reopen_channel(self, timeout):
        self.reopened += 1
        self.error = None
        return self.channel


def test_a_dlq_declared_before_its_delivery_limit_is_kept_with_a_warning(caplog):
    link = RefusingLink(
        "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'ns1.features.dlq'"
        " in vhost '/': received the value '2147483647' of type 'signedint' but current is none"
    )
    declare(link, topology(_settings()), timeout=1)
    calls = [(name, args, kw.get("passive", False)) for name, args, kw in link.channel.calls]
    assert calls[2:4] == [
        ("queue_declare", ("ns1.features.dlq",), False),
        ("queue_declare", ("ns1.features.dlq",), True),  # on a new channel: it exists, use it
    ]
    assert [name for name, _, _ in calls[4:]] == ["queue_bind", "queue_declare", "queue_bind"]
    assert link.reopened == 1
    assert "dead-letter queue declared with another delivery limit" in caplog.text


def test_other_inequivalent_dlq_arguments_still_fail():
    link = RefusingLink("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q'")
    with pytest.raises(AmqpError):
        declare(link, topology(_settings()), timeout=1)
    assert link.reopened == 0


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

    from workers.amqp import PublishRefused
    from workers.metrics import error_kind

    assert error_kind(psycopg2.OperationalError("down")) == "db"
    assert error_kind(AmqpError("gone")) == "amqp"
    assert error_kind(PublishRefused("3 of 3 rows returned or nacked")) == "amqp"
    assert error_kind(pika.exceptions.StreamLostError("lost")) == "amqp"
    assert error_kind(ValueError("bug")) == "other"


def test_a_call_the_broker_refused_says_failed_not_timed_out():
    """A declare with other arguments closes the channel at once: no timeout was involved."""
    link = Link(_settings(), "test")
    link._opened = True  # as after open(): a failure ends any wait at once
    link.error = pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent")
    with pytest.raises(AmqpError, match=r"^operation failed: ChannelClosedByBroker"):
        link.call(lambda _callback: None, timeout=5)
