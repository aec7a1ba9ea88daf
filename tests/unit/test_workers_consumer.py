"""How the consumer classifies database errors: only a message's own data errors are poison."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import uuid

import pika
import psycopg2
import psycopg2.errors
import pytest

from service.events import InteractionRecorded
from service.settings import Settings
from workers.consumer import Consumer, Delivery, PausedForDatabase, Pending
from workers.messages import Delivered

# Errors that say nothing about the message: the batch is held and consuming pauses.
HELD = [
    psycopg2.errors.ReadOnlySqlTransaction,  # 25006, a standby after a failover (InternalError)
    psycopg2.errors.InsufficientPrivilege,  # 42501 (ProgrammingError)
    psycopg2.errors.UndefinedTable,  # 42P01 (ProgrammingError)
    psycopg2.errors.DeadlockDetected,  # 40P01
    psycopg2.errors.AdminShutdown,  # 57P01
    psycopg2.OperationalError,  # the connection broke
    psycopg2.InterfaceError,  # the connection was closed
]
# SQLSTATE classes 22 and 23: the message's data; it is dead-lettered on its own.
POISON = [
    psycopg2.errors.NumericValueOutOfRange,
    psycopg2.errors.InvalidTextRepresentation,
    psycopg2.errors.UniqueViolation,
    psycopg2.errors.NotNullViolation,
]


class RecordingChannel:
    def __init__(self):
        self.acked: list[int] = []

    def basic_ack(self, tag, multiple=False):
        self.acked.append(tag)


class FakeLink:
    """No broker: never alive (pausing sends nothing); waiting just takes the result."""

    generation = 1
    alive = False
    ioloop = None

    def __init__(self):
        self.channel = RecordingChannel()

    def wait_result(self, future):
        return future.result()

    def require(self):
        return self.channel


class FakeApplier:
    """apply_now fails with the error planned for an event, in order; ensure as told."""

    def __init__(self, plan=(), ensure_error=None):
        self.plan, self.ensure_error, self.dropped = list(plan), ensure_error, 0

    def ensure(self):
        if self.ensure_error is not None:
            raise self.ensure_error

    def apply_now(self, events):
        error = self.plan.pop(0)
        if error is not None:
            raise error
        return {e.event_id for e in events}

    def drop_connection(self):
        self.dropped += 1

    def close(self):
        pass


def _consumer(applier: FakeApplier | None = None) -> Consumer:
    consumer = Consumer(dataclasses.replace(Settings(), amqp_namespace="ns1"))
    consumer.link = FakeLink()  # type: ignore[assignment]
    consumer.applier = applier or FakeApplier()  # type: ignore[assignment]
    return consumer


def _valid(n: int, first_tag: int = 1) -> list[tuple[Delivery, Delivered]]:
    batch = []
    for tag in range(first_tag, first_tag + n):
        event = InteractionRecorded(
            event_id=str(uuid.uuid4()),
            client_id="dev",
            user_id="user-1",
            item_id=42,
            kind="click",
            occurred_at="2026-01-02T03:04:00+00:00",
        )
        delivery = Delivery(1, tag, "interaction.click", "ns1.events", pika.BasicProperties(), b"")
        batch.append((delivery, Delivered(event, None, None, None)))
    return batch


def _failed(error: BaseException) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_exception(error)
    return future


@pytest.mark.parametrize("error", HELD, ids=lambda e: e.__name__)
def test_a_batch_the_database_refuses_for_its_own_reasons_is_held_not_dead_lettered(
    error, monkeypatch
):
    consumer = _consumer()
    valid, later = _valid(3), [d for d, _ in _valid(2, first_tag=4)]
    consumer.pending = Pending(valid, _failed(error("refused")), 3, 0.0)
    monkeypatch.setattr(consumer, "_apply_each", lambda *_: pytest.fail("applied one by one"))
    with pytest.raises(PausedForDatabase):
        consumer._finish_pending(then=later)
    assert consumer.held == [d for d, _ in valid] + later
    assert consumer.paused and consumer.applier.dropped == 1  # reconnects: maybe a new primary
    assert consumer.link.channel.acked == []


@pytest.mark.parametrize("error", POISON, ids=lambda e: e.__name__)
def test_a_batch_refused_over_its_data_is_applied_one_by_one(error, monkeypatch):
    consumer = _consumer()
    valid = _valid(3)
    consumer.pending = Pending(valid, _failed(error("bad value")), 3, 0.0)
    calls = []
    monkeypatch.setattr(consumer, "_apply_each", lambda *args: calls.append(args))
    assert consumer._finish_pending(then=[]) == 3
    assert calls == [(valid, [])] and not consumer.held and not consumer.paused


def test_one_by_one_dead_letters_data_errors_and_holds_the_rest_on_any_other_error(monkeypatch):
    readonly = psycopg2.errors.ReadOnlySqlTransaction("cannot execute INSERT")
    plan = [None, psycopg2.errors.NumericValueOutOfRange("out of range"), readonly, None]
    consumer = _consumer(FakeApplier(plan))
    valid, later = _valid(4), [d for d, _ in _valid(1, first_tag=5)]
    dead = []
    monkeypatch.setattr(consumer, "_dead_letter", lambda delivery, reason: dead.append(delivery))
    with pytest.raises(PausedForDatabase):
        consumer._apply_each(valid, later)
    assert consumer.link.channel.acked == [1]
    assert dead == [valid[1][0]]
    assert consumer.held == [valid[2][0], valid[3][0]] + later  # neither applied nor acked


@pytest.mark.parametrize("error", [*HELD, *POISON], ids=lambda e: e.__name__)
def test_a_failing_connect_or_prepare_holds_the_batch(error):
    # No message is involved yet: even a data error here says nothing about one.
    consumer = _consumer(FakeApplier(ensure_error=error("prepare failed")))
    valid = _valid(2)
    with pytest.raises(PausedForDatabase):
        consumer._submit(valid)
    assert consumer.held == [d for d, _ in valid] and consumer.pending is None
    assert consumer.paused
