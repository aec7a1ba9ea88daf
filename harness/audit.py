"""The invariant audit run after tests, load runs and chaos experiments (G1-G4).

Given the database, the broker and optionally a Jepsen-style history of client operations,
wait (bounded) until the pipeline is drained, then count: lost, unexpected, duplicated
effects, recovered, DLQ depth, queue depth and outbox pending.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import pika
import pika.exceptions
import psycopg2

from harness import metrics_page
from harness.audit_state import misplaced, snapshot
from workers.topology import FEATURE_CONSUMER

OUTCOMES = ("ok", "fail", "info")

PENDING = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
INBOX_COUNT = "SELECT count(*) FROM inbox WHERE consumer = %(consumer)s"
UNAPPLIED = """
SELECT count(*) FROM unnest(%(ids)s::uuid[]) AS owed(event_id)
WHERE NOT EXISTS (
    SELECT 1 FROM inbox i WHERE i.consumer = %(consumer)s AND i.event_id = owed.event_id
)
"""
# A consumer that backs off after a database failure (capped at RECO_BACKOFF_MAX_S, 30 s by
# default) holds its batch unacked: a queue's message count does not show those deliveries,
# so acknowledged writes still unapplied are waited for this much longer before counting lost,
# unless the consumer itself says it holds nothing (``unacked``) for CLEAR_S on end.
HELD_WAIT_S = 35.0
# Long enough for several polls: a delivery on its way (sent, not yet received) or bouncing
# back to the queue between two reads cannot hide from all of them.
CLEAR_S = 2.0
UNACKED_GAUGE = "reco_consumer_unacked_deliveries"


@dataclasses.dataclass
class AuditResult:
    """What the audit found; ``ok`` is the verdict (duplicates at the broker are allowed)."""

    drained: bool
    drain_seconds: float
    outbox_pending: int
    queue_ready: int | None
    queue_consumers: int | None
    dlq_depth: int | None
    expected_dlq: int
    applied: int
    popularity_effects: int
    interaction_effects: int
    lost: list[str]
    unexpected: list[str]
    failed_but_applied: list[str]
    recovered: list[str]
    info_absent: int
    history_given: bool
    # What the stack held before the run (see Earlier): not this run's doing.
    earlier_duplicated: int = 0
    earlier_missing: int = 0
    earlier_dlq: int = 0
    # Effects this run left short on the rows its events name (see SHORT_ROWS), e.g. samples.
    misplaced_effects: int = 0
    misplaced_rows: list[str] = dataclasses.field(default_factory=list)

    @property
    def duplicated_effects_total(self) -> int:
        """Effects beyond one per applied id in the whole database."""
        return max(self.popularity_effects, self.interaction_effects) - self.applied

    @property
    def missing_effects_total(self) -> int:
        """Applied ids whose effect is missing from a feature table, in the whole database."""
        return self.applied - min(self.popularity_effects, self.interaction_effects)

    @property
    def duplicated_effects(self) -> int:
        """Duplicated effects this run added (0 when exactly-once held)."""
        return self.duplicated_effects_total - self.earlier_duplicated

    @property
    def missing_effects(self) -> int:
        """Missing effects this run added."""
        # The totals balance when an effect lands on the wrong row: the rows tell.
        return max(self.missing_effects_total - self.earlier_missing, self.misplaced_effects)

    @property
    def dlq_run(self) -> int:
        """Dead-lettered messages this run added."""
        return (self.dlq_depth or 0) - self.earlier_dlq

    @property
    def ok(self) -> bool:
        return (
            self.drained
            and not self.lost
            and not self.unexpected
            and not self.failed_but_applied
            and self.duplicated_effects == 0
            and self.missing_effects == 0
            and self.dlq_run == self.expected_dlq
        )

    def violations(self) -> list[str]:
        """Describe each broken invariant in one line."""
        found = []
        if not self.drained:
            queue = "missing" if self.queue_ready is None else self.queue_ready
            found.append(f"not drained: outbox pending {self.outbox_pending}, queue {queue}")
        if self.lost:
            found.append(f"lost {len(self.lost)} accepted events, e.g. {self.lost[:3]}")
        if self.unexpected:
            found.append(f"unexpected {len(self.unexpected)} events, e.g. {self.unexpected[:3]}")
        if self.failed_but_applied:
            found.append(
                f"{len(self.failed_but_applied)} failed writes were committed or applied,"
                f" e.g. {self.failed_but_applied[:3]}"
            )
        if self.duplicated_effects:
            found.append(f"duplicated effects: {self.duplicated_effects}")
        if self.missing_effects:
            where = f" (short on {self.misplaced_rows[:3]})" if self.misplaced_effects else ""
            found.append(f"missing effects: {self.missing_effects}{where}")
        if self.dlq_run != self.expected_dlq:
            found.append(f"DLQ depth {self.dlq_run} from this run, expected {self.expected_dlq}")
        return found

    def to_dict(self) -> dict[str, Any]:
        """Counts and verdict as JSON-ready data (id lists trimmed to 20 samples)."""
        data = dataclasses.asdict(self)
        for key in ("lost", "unexpected", "failed_but_applied", "recovered"):
            data[f"{key}_count"] = len(data[key])
            data[key] = data[key][:20]
        data.update(
            ok=self.ok,
            duplicated_effects=self.duplicated_effects,
            duplicated_effects_total=self.duplicated_effects_total,
            missing_effects=self.missing_effects,
            missing_effects_total=self.missing_effects_total,
            dlq_depth=self.dlq_run,
            dlq_depth_total=self.dlq_depth,
            queue_unacked=None,  # not observable over AMQP 0-9-1; inbox stability stands in
            violations=self.violations(),
        )
        return data


@dataclasses.dataclass(frozen=True)
class Earlier:
    """What a stack held before a run: the run is judged on what it added.

    A stack reused after earlier runs carries their events and effects, and a negative
    control duplicates or drops effects on purpose: none of that is the next run's doing.
    """

    event_ids: list[str]
    duplicated_effects: int
    missing_effects: int
    dlq_depth: int
    short_rows: dict[str, int] = dataclasses.field(default_factory=dict)


def earlier(
    database_url: str, amqp_url: str, namespace: str, consumer: str = FEATURE_CONSUMER
) -> Earlier:
    """Note the events, the effect balance and the DLQ depth before a run."""
    state = snapshot(database_url, consumer)
    applied, (popularity, interactions) = len(state.applied), state.effects
    broker = _Broker(amqp_url)
    try:
        dlq = broker.state(f"{namespace}.{consumer}.dlq")[0] or 0  # no DLQ yet: zero
    finally:
        broker.close()
    return Earlier(
        event_ids=sorted(state.events),
        duplicated_effects=max(popularity, interactions) - applied,
        missing_effects=applied - min(popularity, interactions),
        short_rows=state.short,
        dlq_depth=dlq,
    )


def audit(
    database_url: str,
    amqp_url: str,
    namespace: str,
    history: Iterable[Mapping[str, Any]] | None = None,
    drain_timeout_s: float = 60.0,
    settle_s: float = 1.0,
    expected_dlq: int = 0,
    consumer: str = FEATURE_CONSUMER,
    before: Earlier | None = None,
    held_wait_s: float = HELD_WAIT_S,
    unacked: Callable[[], int | None] | None = None,
) -> AuditResult:
    """Wait for the pipeline to drain (bounded), then reconcile database and broker.

    With ``before`` (from ``earlier()``), events and effects the stack held already are not
    charged to this run: earlier events count as outcome unknown. ``held_wait_s`` bounds the
    extra wait for acknowledged writes a quiet pipeline has not applied (see HELD_WAIT_S);
    ``unacked`` (the consumer's count of deliveries it holds, None when unknown) ends that
    wait once it has read 0 for CLEAR_S.
    """
    baseline: set[str] = set()
    if before is not None and history is not None:
        history = [*history, {"op": "baseline", "outcome": "info", "event_ids": before.event_ids}]
        baseline = {str(i).lower() for i in before.event_ids}
    ops = _validated(history) if history is not None else None
    conn = psycopg2.connect(database_url, connect_timeout=5)
    conn.autocommit = True
    broker = _Broker(amqp_url)
    try:
        started = time.monotonic()
        owed = sorted(ops["ok"]) if ops is not None else []
        drained, pending, ready, consumers = _drain(
            conn,
            broker,
            f"{namespace}.{consumer}",
            consumer,
            drain_timeout_s,
            settle_s,
            owed,
            held_wait_s,
            unacked,
        )
        drain_seconds = time.monotonic() - started
        dlq = broker.state(f"{namespace}.{consumer}.dlq")[0]
    finally:
        broker.close()
        conn.close()
    state = snapshot(database_url, consumer)
    applied_ids, (popularity, interactions) = state.applied, state.effects
    misplaced_count, rows = misplaced(state.short, before.short_rows if before else {})
    lost, unexpected, failed_applied, recovered, info_absent = _reconcile(
        ops, applied_ids, state.events, state.outbox, baseline, state.tagged
    )
    return AuditResult(
        drained=drained,
        drain_seconds=round(drain_seconds, 3),
        outbox_pending=pending,
        queue_ready=ready,
        queue_consumers=consumers,
        dlq_depth=dlq,
        expected_dlq=expected_dlq,
        applied=len(applied_ids),
        popularity_effects=popularity,
        interaction_effects=interactions,
        lost=lost,
        unexpected=unexpected,
        failed_but_applied=failed_applied,
        recovered=recovered,
        info_absent=info_absent,
        history_given=ops is not None,
        earlier_duplicated=before.duplicated_effects if before else 0,
        earlier_missing=before.missing_effects if before else 0,
        earlier_dlq=before.dlq_depth if before else 0,
        misplaced_effects=misplaced_count,
        misplaced_rows=rows[:20],
    )


def _validated(history: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    ops: dict[str, set[str]] = {outcome: set() for outcome in OUTCOMES}
    for index, op in enumerate(history):
        outcome = op.get("outcome")
        if outcome not in OUTCOMES:
            raise ValueError(f"history[{index}]: outcome must be one of {OUTCOMES}")
        ops[outcome].update(str(i).lower() for i in op.get("event_ids", ()))
    # An id retried after an unknown outcome and then acknowledged counts as ok.
    ops["info"] -= ops["ok"]
    ops["fail"] -= ops["ok"] | ops["info"]
    return ops


def _reconcile(
    ops,
    applied: set[str],
    events: set[str],
    outbox: set[str],
    baseline: AbstractSet[str] = frozenset(),
    tagged: AbstractSet[str] = frozenset(),
):
    committed = events | outbox
    if ops is None:
        # No history: every accepted event (events table or outbox) must have been applied.
        return sorted(committed - applied), [], [], [], 0
    # A smoke check's events were attempted too, by the check (which verifies them itself):
    # not phantoms, though owed their effect like any committed write.
    attempted = ops["ok"] | ops["info"] | ops["fail"] | set(tagged)
    # Every write of this run that committed is owed its effect, whatever its client heard: an
    # info whose COMMIT landed, and a fail that committed all the same (wrong in itself).
    # Earlier runs' events were judged then.
    accepted = ops["ok"] | (committed - baseline)
    # An acknowledged event is owed its business row too: without it the API denies it (404).
    lost = sorted((accepted - applied) | (ops["ok"] - events))
    unexpected = sorted((applied | events) - attempted)
    # The API promises that a definite failure (4xx, 503) committed nothing.
    failed_applied = sorted(ops["fail"] & (applied | committed))
    # This run's unknown outcomes only: earlier events are history, not writes it recovered.
    unknown = ops["info"] - baseline
    recovered = sorted(unknown & applied)
    # Unknown outcomes that never committed: the write did not happen, which is allowed.
    return lost, unexpected, failed_applied, recovered, len(unknown - applied - committed)


def _drain(
    conn,
    broker: _Broker,
    queue: str,
    consumer: str,
    timeout_s: float,
    settle_s: float,
    owed: list[str] | None = None,
    held_wait_s: float = HELD_WAIT_S,
    unacked: Callable[[], int | None] | None = None,
):
    """Poll until outbox and queue are empty and the inbox stopped growing for ``settle_s``.

    While ``owed`` ids (acknowledged writes) are still unapplied, a quiet pipeline is waited on
    up to ``held_wait_s`` longer (never past ``timeout_s``): deliveries held unacked are in
    flight, unless ``unacked`` read 0 on every poll for CLEAR_S.
    """
    deadline = time.monotonic() + timeout_s
    stable_since = clear_since = None
    last_count = -1
    pending = ready = consumers = None
    while True:
        with conn.cursor() as cur:
            cur.execute(PENDING)
            pending = cur.fetchone()[0]
            cur.execute(INBOX_COUNT, {"consumer": consumer})
            count = cur.fetchone()[0]
        ready, consumers = broker.state(queue)
        # A missing queue is not an empty one: whatever was routed to it is gone.
        quiet = pending == 0 and ready == 0 and count == last_count
        held = unacked() if quiet and unacked is not None else None
        now = time.monotonic()
        stable_since = (stable_since or now) if quiet else None
        clear_since = (clear_since or now) if held == 0 else None
        last_count = count
        if stable_since is not None and now - stable_since >= settle_s:
            nothing_held = clear_since is not None and now - clear_since >= CLEAR_S
            waited_out = (
                nothing_held or now - stable_since >= settle_s + held_wait_s or now >= deadline
            )
            if waited_out or not owed or _unapplied(conn, owed, consumer) == 0:
                return True, pending, ready, consumers
        if now >= deadline:
            return False, pending, ready, consumers
        time.sleep(min(0.2, max(0.0, deadline - now)))


def consumer_unacked(metrics_url: str | None) -> int | None:
    """The deliveries a consumer holds unacked, from its /metrics; None when it cannot tell.

    A consumer without the gauge (an older build) cannot tell either: the audit keeps waiting.
    """
    if not metrics_url:
        return None
    value = metrics_page.scrape(metrics_url, UNACKED_GAUGE, UNACKED_GAUGE, timeout_s=1)
    return None if value is None else int(value)


def _unapplied(conn, ids: list[str], consumer: str) -> int:
    with conn.cursor() as cur:
        cur.execute(UNAPPLIED, {"ids": ids, "consumer": consumer})
        return int(cur.fetchone()[0])


class _Broker:
    """Passive queue declares over one connection (a 404 closes only the channel)."""

    def __init__(self, amqp_url: str):
        params = pika.URLParameters(amqp_url)
        params.socket_timeout = 5
        params.blocked_connection_timeout = 5
        params.stack_timeout = 10
        params.connection_attempts = 1
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()

    def state(self, queue: str) -> tuple[int | None, int | None]:
        """Return (ready messages, consumers); (None, None) if the queue does not exist."""
        try:
            ok = self.channel.queue_declare(queue, passive=True).method
        except pika.exceptions.ChannelClosedByBroker:
            self.channel = self.connection.channel()
            return None, None
        return ok.message_count, ok.consumer_count

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
