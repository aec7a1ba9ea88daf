"""Inspect, replay or drop dead letters: ``python -m workers.dlq list|replay|drop [--limit N]``.

``replay`` moves messages back to the events exchange under their original routing key:
publish (persistent, mandatory, confirmed) first, then ack the DLQ copy. A crash between
the two leaves the message in both places; the consumer's inbox absorbs the duplicate
(at-least-once). Fix the cause before replaying poison, or it lands in the DLQ again.
``drop --id ID …`` acks (deletes) only the dead letters with those message ids, printing
each as the record of what was dropped; every other message stays.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from service.settings import ConfigError, Settings
from workers.amqp import connection_parameters
from workers.messages import (
    DEAD_AT,
    DEAD_REASON,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    copy_properties,
)
from workers.topology import topology

REPLAYS = "x-reco-replays"
# What an unreachable, silent or refusing broker raises: pika passes a failed name lookup
# (OSError) and a handshake timeout (AMQPConnectorException) through without wrapping them.
BROKER_ERRORS = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)
DROPPED_HEADERS = (DEAD_REASON, DEAD_AT, ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY, "x-death")


def original_routing_key(method: Any, headers: dict[str, Any]) -> str:
    """The routing key the message had before it was dead-lettered."""
    if headers.get(ORIGINAL_ROUTING_KEY):
        return str(headers[ORIGINAL_ROUTING_KEY])
    deaths = headers.get("x-death") or []
    if deaths and deaths[0].get("routing-keys"):
        return str(deaths[0]["routing-keys"][0])
    return method.routing_key


def describe(method: Any, props: pika.BasicProperties) -> dict[str, Any]:
    """One DLQ message as a JSON-ready summary."""
    headers = props.headers or {}
    deaths = headers.get("x-death") or []
    return {
        "message_id": props.message_id,
        "type": props.type,
        "reason": headers.get(DEAD_REASON) or (deaths[0].get("reason") if deaths else None),
        "dead_at": headers.get(DEAD_AT),
        "routing_key": original_routing_key(method, headers),
        "request_id": headers.get("request_id"),
        "correlation_id": props.correlation_id,
        "replays": headers.get(REPLAYS, 0),
        "redelivered": method.redelivered,
    }


def replay_properties(props: pika.BasicProperties) -> pika.BasicProperties:
    """Properties for the replayed copy: dead-letter headers dropped, replay count kept."""
    headers = {k: v for k, v in (props.headers or {}).items() if k not in DROPPED_HEADERS}
    headers = {
        k: v for k, v in headers.items() if not k.startswith(("x-first-death", "x-last-death"))
    }
    headers[REPLAYS] = int((props.headers or {}).get(REPLAYS, 0)) + 1
    return copy_properties(props, headers)


@contextlib.contextmanager
def stop_signals() -> Iterator[list[int]]:
    """Record SIGTERM/SIGINT in the yielded list instead of dying; restore the handlers after."""
    received: list[int] = []
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.signal(signum, lambda n, _f: received.append(n)) for signum in stops}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(
    settings: Settings,
    command: str,
    limit: int,
    out: Callable[[str], None] = print,
    stopped: list[int] | None = None,
    ids: frozenset[str] = frozenset(),
) -> int:
    """Execute ``list``, ``replay`` or ``drop`` (of ``ids``) on at most ``limit`` messages.

    Returns the exit code. A signal number in ``stopped`` ends the run between two messages:
    128 + that number.
    """
    stopped = [] if stopped is None else stopped
    topo = topology(settings)
    connection = pika.BlockingConnection(connection_parameters(settings, "dlq-tool"))
    try:
        channel = connection.channel()
        if command == "replay":
            channel.confirm_delivery()
        # Poison replayed unfixed is dead-lettered again within milliseconds: without these
        # bounds one replay would cycle it through the consumer until --limit ran out.
        present = channel.queue_declare(topo.dlq, passive=True).method.message_count
        replayed: set[str] = set()
        found: set[str] = set()
        handled, failures = 0, 0
        for _ in range(min(limit, present)):
            if stopped:
                break  # between messages: none is left published but not acked
            method, props, body = channel.basic_get(topo.dlq, auto_ack=False)
            if method is None:
                break
            summary = describe(method, props)
            if command == "replay" and props.message_id in replayed:
                channel.basic_nack(method.delivery_tag, requeue=True)
                break  # back already: every message of this run has been replayed once
            if command == "list":
                out(orjson.dumps(summary).decode())
                handled += 1
                continue
            if command == "drop":
                if props.message_id in ids:
                    # Every copy of the id goes: a replayed message dead-lettered again is one.
                    channel.basic_ack(method.delivery_tag)
                    found.add(props.message_id)
                    out(orjson.dumps({**summary, "dropped": True}).decode())
                    handled += 1
                continue  # not asked for: unacked, so it returns to the DLQ on close
            try:
                channel.basic_publish(
                    topo.exchange, summary["routing_key"], body, replay_properties(props), True
                )
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                channel.basic_nack(method.delivery_tag, requeue=True)
                out(orjson.dumps({**summary, "replayed": False, "error": repr(exc)}).decode())
                failures += 1
                break  # the route is broken: replaying more would only bounce them too
            channel.basic_ack(method.delivery_tag)
            if props.message_id:
                replayed.add(props.message_id)
            out(orjson.dumps({**summary, "replayed": True}).decode())
            handled += 1
    finally:
        if connection.is_open:
            connection.close()  # un-acked (listed) messages return to the DLQ
    missing = sorted(ids - found)  # gone already, mistyped, or beyond --limit
    failures += len(missing)
    result: dict[str, Any] = {"command": command, "messages": handled, "failures": failures}
    if missing:
        result["not_found"] = missing
    if stopped:
        result["stopped_by"] = signal.Signals(stopped[0]).name
    out(orjson.dumps(result).decode())
    if stopped:
        return 128 + stopped[0]
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m workers.dlq``."""
    parser = argparse.ArgumentParser(prog="python -m workers.dlq", description=__doc__)
    parser.add_argument("command", choices=("list", "replay", "drop"))
    parser.add_argument("--limit", type=int, default=1000, help="at most this many messages")
    parser.add_argument(
        "--id",
        dest="ids",
        action="append",
        default=[],
        metavar="MESSAGE_ID",
        help="drop: a message id (the event id) to drop; repeat for more",
    )
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error("--limit must be at least 1")
    if (args.command == "drop") != bool(args.ids):
        parser.error("--id goes with drop, and drop needs at least one --id")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"dlq: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        connection_parameters(settings, "dlq-tool")
    except ValueError as exc:
        print(f"dlq: configuration error: RECO_AMQP_URL: {exc}", file=sys.stderr)
        return 2
    try:
        with stop_signals() as stopped:
            return run(settings, args.command, args.limit, stopped=stopped, ids=frozenset(args.ids))
    except BROKER_ERRORS as exc:
        print(f"dlq: broker error: {exc!r}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
