"""Worker benchmarks: bare baselines (B4a/B4b/B4c/B5b) and the relay and consumer (S2-S4).

Every function takes Settings (database, broker, namespace) and returns a Rate or a dict, so
pytest-benchmark tests and ``reco-harness bench system`` can call the same code. Methods
follow docs/performance.md: same message bytes, properties, flags and queue type for a
baseline and the component compared with it; ratios come from interleaved rounds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable

import orjson
import pika
import psycopg2

from harness.bench import cpu
from service.events import KINDS, InteractionRecorded
from service.settings import Settings
from workers.amqp import Link
from workers.confirms import ConfirmTracker
from workers.consumer import Consumer
from workers.messages import properties_for
from workers.relay import Relay
from workers.topology import declare, topology

Message = tuple[str, bytes, pika.BasicProperties]


@dataclasses.dataclass
class Rate:
    """Events handled, wall seconds and this process's CPU seconds for one measurement."""

    name: str
    count: int
    seconds: float
    cpu_s: float = 0.0
    host_busy: float | None = None  # share of all cores busy (any process) meanwhile

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, float | str]:
        cpu_per_1k = 1000 * self.cpu_s / self.count if self.count else 0.0
        return {
            "name": self.name,
            "count": self.count,
            "seconds": round(self.seconds, 4),
            "per_s": round(self.per_s, 1),
            "client_cpu_s_per_1k": round(cpu_per_1k, 4),
            **({} if self.host_busy is None else {"host_busy": round(self.host_busy, 3)}),
        }


def bench_settings(database_url: str, amqp_url: str, namespace: str = "", **env: str) -> Settings:
    """Settings for a benchmark run (test mode, quiet logs, a unique namespace by default)."""
    values = {
        "RECO_ENV": "test",
        "RECO_DATABASE_URL": database_url,
        "RECO_AMQP_URL": amqp_url,
        "RECO_AMQP_NAMESPACE": namespace or f"bench{uuid.uuid4().hex[:8]}",
        "RECO_LOG_LEVEL": "WARNING",
        **env,
    }
    return Settings.from_env(values)


# -- data ------------------------------------------------------------------------------------
def make_events(n: int, users: int = 1000) -> list[InteractionRecorded]:
    """``n`` valid events with fresh ids, spread over ``users`` users and the 5,000 items."""
    now = dt.datetime.now(dt.UTC).isoformat()
    return [
        InteractionRecorded(
            str(uuid.uuid4()), "bench", f"user-{i % users}", 1 + (i * 7) % 5000, KINDS[i % 3], now
        )
        for i in range(n)
    ]


def seed_outbox(
    database_url: str, events: list[InteractionRecorded], with_events=False, analyze=True
) -> dt.datetime:
    """COPY events into the outbox (and the events table) in one transaction, then ANALYZE.

    Returns the database clock read just before COMMIT: no relay can see the rows earlier.
    """
    rows = io.StringIO()
    for e in events if with_events else ():
        rows.write(f"{e.event_id}\t{e.client_id}\t{e.user_id}\t{e.item_id}\t{e.kind}\t")
        rows.write(f"{e.occurred_at}\tbench\n")
    conn = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            if with_events:
                rows.seek(0)
                cur.copy_expert(
                    "COPY events (event_id, client_id, user_id, item_id, kind, occurred_at,"
                    " request_id) FROM STDIN",
                    rows,
                )
            cur.copy_expert(COPY_OUTBOX, io.StringIO("".join(_copy_lines(events))))
            cur.execute("SELECT clock_timestamp()")
            before_commit = cur.fetchone()[0]
        conn.commit()
        if analyze:
            _vacuum_analyze_outbox(conn)
    finally:
        conn.close()
    return before_commit


def _vacuum_analyze_outbox(conn) -> None:
    """VACUUM ANALYZE the outbox (switches ``conn`` to autocommit: VACUUM needs it)."""
    # Fresh statistics, or the planner sorts the whole backlog instead of using the partial
    # index (autovacuum would get there, a benchmark cannot wait for it).
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE outbox")


def messages_for(events: list[InteractionRecorded]) -> list[Message]:
    """The exact messages the relay would publish for these events."""
    created = dt.datetime.now(dt.UTC)
    headers = {"request_id": "bench", "correlation_id": "bench", "event_version": 1}
    return [
        (e.routing_key, e.to_payload(), properties_for(i, e.event_id, e.TYPE, headers, created))
        for i, e in enumerate(events, start=1)
    ]


# -- broker helpers --------------------------------------------------------------------------
class Publisher:
    """A confirm-mode channel with a bounded window of publishes in flight."""

    def __init__(self, settings: Settings):
        self.topo = topology(settings)
        self.link = Link(settings, "bench")
        self.link.open()
        declare(self.link, self.topo, 10)
        self.tracker = ConfirmTracker()
        self.returns = 0
        channel = self.link.require()
        channel.add_on_return_callback(lambda *_: setattr(self, "returns", self.returns + 1))
        self.link.call(lambda cb: channel.confirm_delivery(self._on_confirm, callback=cb), 10)

    def _on_confirm(self, frame) -> None:
        m = frame.method
        settle = self.tracker.ack if isinstance(m, pika.spec.Basic.Ack) else self.tracker.nack
        settle(m.delivery_tag, m.multiple)

    def publish(self, messages: list[Message], window: int = 256, exchange=None) -> Rate:
        """Publish with at most ``window`` unconfirmed; return the confirmed rate."""
        channel = self.link.require()
        exchange = self.topo.exchange if exchange is None else exchange
        first = self.tracker.next_tag
        cpu, start = time.process_time(), time.perf_counter()
        for routing_key, body, props in messages:
            channel.basic_publish(exchange, routing_key, body, props, True)
            self.tracker.published(self.tracker.next_tag)  # key = tag: copies may repeat ids
            if self.tracker.outstanding >= window:
                self.link.wait_for(lambda: self.tracker.outstanding < window, 30)
        self.link.wait_for(lambda: self.tracker.outstanding == 0, 30)
        seconds = time.perf_counter() - start
        acked, failed = self.tracker.take(range(first, self.tracker.next_tag))
        if failed or self.returns or len(acked) != len(messages):
            raise RuntimeError(
                f"bench publish: {len(failed)} failed, {self.returns} returned, {len(acked)} acked"
            )
        return Rate("publish", len(messages), seconds, time.process_time() - cpu)

    def purge(self) -> None:
        """Empty the feature queue and the DLQ."""
        for queue in (self.topo.queue, self.topo.dlq):
            self.link.purge(queue, 30)

    def depth(self) -> int:
        return self.link.ready_count(self.topo.queue, 10)

    def close(self) -> None:
        self.link.close()


def purge_queues(settings: Settings) -> None:
    """Empty the feature queue and the DLQ over a connection of its own."""
    publisher = Publisher(settings)
    try:
        publisher.purge()
    finally:
        publisher.close()


def _blocking(settings: Settings) -> pika.BlockingConnection:
    params = pika.URLParameters(settings.amqp_url)
    params.socket_timeout = 10
    params.blocked_connection_timeout = 30
    return pika.BlockingConnection(params)


# -- baselines -------------------------------------------------------------------------------
def bare_publish_pipelined(settings: Settings, messages: list[Message], window=256) -> Rate:
    """B4b: pipelined confirms on a SelectConnection-style channel, the relay's ceiling."""
    publisher = Publisher(settings)
    try:
        rate = publisher.publish(messages, window)
        publisher.purge()
    finally:
        publisher.close()
    return dataclasses.replace(rate, name="B4b bare pipelined confirms")


def bare_publishers(settings: Settings, n: int, processes: int) -> Rate:
    """B4b from ``processes`` processes at once, ``n`` messages in all: how the broker scales.

    Timed from the first publish to the last confirm of any process. Each process makes its
    own connection after the fork, as k relay processes would.
    """
    ctx = multiprocessing.get_context("fork")
    go, spans = ctx.Event(), ctx.Queue()
    share = -(-n // processes)  # ceiling: n in all, give or take processes - 1
    procs = [
        ctx.Process(target=_publish_share, args=(settings, share, go, spans), daemon=True)
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    try:
        go.set()
        results = [spans.get(timeout=120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        raise RuntimeError(f"bare publisher failed: {failed[0]}")
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    purge_queues(settings)
    return Rate(f"B4b bare pipelined confirms x{processes}", share * processes, end - start)


def _publish_share(settings: Settings, count: int, go, spans) -> None:
    """One bare publisher process: connect, wait for the start, publish, report its span."""
    try:
        publisher = Publisher(settings)
        messages = messages_for(make_events(count))
        go.wait(60)
        started = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        publisher.publish(messages)
        spans.put((started, time.perf_counter()))
        publisher.close()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        spans.put(repr(exc))


def bare_publish_per_message(settings: Settings, messages: list[Message]) -> Rate:
    """B4a: BlockingChannel in confirm mode, one round trip per message."""
    return _blocking_publish(settings, messages, confirm=True, name="B4a bare per-message confirm")


def bare_publish_no_confirm(settings: Settings, messages: list[Message]) -> Rate:
    """B4c: BlockingChannel without confirms, the client CPU ceiling."""
    return _blocking_publish(settings, messages, confirm=False, name="B4c bare no confirms")


def _blocking_publish(settings, messages, confirm: bool, name: str) -> Rate:
    topo = topology(settings)
    connection = _blocking(settings)
    try:
        channel = connection.channel()
        if confirm:
            channel.confirm_delivery()
        cpu, start = time.process_time(), time.perf_counter()
        for routing_key, body, props in messages:
            channel.basic_publish(topo.exchange, routing_key, body, props, mandatory=True)
        if not confirm:
            channel.queue_declare(topo.queue, passive=True)  # a round trip flushes the socket
        seconds = time.perf_counter() - start
        rate = Rate(name, len(messages), seconds, time.process_time() - cpu)
        channel.queue_purge(topo.queue)
    finally:
        connection.close()
    return rate


BENCH_TABLE = "CREATE TABLE IF NOT EXISTS bench_processed (event_id uuid PRIMARY KEY)"
BENCH_INSERT = (
    "INSERT INTO bench_processed (event_id) SELECT unnest(%(ids)s::uuid[]) ON CONFLICT DO NOTHING"
)


def bare_consume_commit(settings: Settings, messages: list[Message]) -> Rate:
    """B5b: consume with prefetch, insert ids + COMMIT per batch, multiple-ack after commit."""
    _fill(settings, messages)
    topo, batch_size = topology(settings), settings.consumer_batch_size
    conn = psycopg2.connect(settings.database_url, connect_timeout=5)
    link = Link(settings, "bench-consume")
    try:
        with conn.cursor() as cur:
            cur.execute(BENCH_TABLE)
        conn.commit()
        link.open()
        channel = link.require()
        link.call(
            lambda cb: channel.basic_qos(prefetch_count=settings.consumer_prefetch, callback=cb), 10
        )
        buffer: list[tuple[int, str]] = []
        channel.basic_consume(
            topo.queue, lambda _c, m, p, _b: buffer.append((m.delivery_tag, p.message_id))
        )
        done, cpu, start = 0, time.process_time(), time.perf_counter()
        deadline = time.monotonic() + 120
        while done < len(messages) and time.monotonic() < deadline:
            link.wait_for(lambda: len(buffer) >= batch_size, settings.consumer_batch_wait_ms / 1000)
            batch, buffer[:] = buffer[:batch_size], buffer[batch_size:]
            if not batch:
                continue
            with conn.cursor() as cur:
                cur.execute(BENCH_INSERT, {"ids": [m for _, m in batch]})
            conn.commit()
            channel.basic_ack(batch[-1][0], multiple=True)
            done += len(batch)
        seconds = time.perf_counter() - start
        return Rate("B5b bare consume+commit", done, seconds, time.process_time() - cpu)
    finally:
        link.close()
        conn.close()


def _fill(settings: Settings, messages: list[Message]) -> None:
    publisher = Publisher(settings)
    try:
        publisher.purge()
        publisher.publish(messages, 1024)
    finally:
        publisher.close()


# -- the components ----------------------------------------------------------------------
def relay_drain(settings: Settings, n: int) -> Rate:
    """S2: seed ``n`` outbox rows, then time an in-process Relay draining them."""
    seed_outbox(settings.database_url, make_events(n))
    relay = Relay(settings)
    try:
        relay.prepare()  # connect outside the timed part
        cpu, start = time.process_time(), time.perf_counter()
        for _ in range(2 * n // max(1, settings.relay_batch_size) + 10):
            if relay.run_once() == 0:
                break
        seconds = time.perf_counter() - start
        done = int(relay.metrics.registry.get_sample_value("reco_relay_published_total") or 0)
        if relay.link is None:
            raise RuntimeError("the relay closed its link while draining")
        relay.link.purge(relay.topo.queue, 30)
    finally:
        relay.close()
    return Rate(f"S2 relay drain {n}", done, seconds, time.process_time() - cpu)


def backlog_growth(settings: Settings, small=1_000, large=100_000, repeats=10) -> dict:
    """Drain rate with a ``large`` backlog over the rate with ``small`` ones.

    Small drains are short and noisy: ``repeats`` of them are pooled (rows / seconds) just
    before and just after the large one, and the large rate is compared with their mean.
    """

    def pooled() -> float:
        rates = [relay_drain(settings, small) for _ in range(repeats)]
        return sum(r.count for r in rates) / sum(r.seconds for r in rates)

    before = pooled()
    big = relay_drain(settings, large)
    after = pooled()
    return {
        "R_backlog": round(big.per_s / ((before + after) / 2), 3),
        "small_per_s": [round(before, 1), round(after, 1)],
        "large_per_s": round(big.per_s, 1),
    }


def consumer_drain(settings: Settings, messages: list[Message]) -> Rate:
    """S3: fill the queue with real events, then time an in-process Consumer applying them."""
    _fill(settings, messages)
    consumer = Consumer(settings)
    try:
        done, cpu, start = 0, time.process_time(), time.perf_counter()
        deadline = time.monotonic() + 120
        while done < len(messages) and time.monotonic() < deadline:
            handled = consumer.run_once()
            done += handled
            if handled == 0:
                consumer.wait(0.5)
        seconds = time.perf_counter() - start
    finally:
        consumer.close()
    return Rate("S3 consumer drain", done, seconds, time.process_time() - cpu)


# The last event of a drain: published (the relay's stage) or applied (the whole pipeline).
LAST_PUBLISHED = "SELECT EXTRACT(EPOCH FROM max(published_at) - %(t)s) FROM outbox"
LAST_PUBLISHED += " WHERE published_at >= %(t)s"
LAST_APPLIED = "SELECT EXTRACT(EPOCH FROM max(applied_at) - %(t)s) FROM inbox"
LAST_APPLIED += " WHERE applied_at >= %(t)s"


def relay_processes_drain(settings: Settings, n: int, processes: int, workdir) -> Rate:
    """Time ``processes`` relay processes draining an ``n``-row backlog (commit to last mark)."""
    rate = _processes_drain(
        settings, n, ["relay"] * processes, workdir, lambda c: _pending(c) == 0, LAST_PUBLISHED
    )
    purge_queues(settings)
    return dataclasses.replace(rate, name=f"relay x{processes} drain {n}")


def pipeline_drain(settings: Settings, n: int, workdir) -> Rate:
    """The whole pipeline's rate: relay and consumer processes applying an ``n``-row backlog.

    Timed from the seed's commit to the last ``applied_at``: what the relay, the broker and
    the consumer sustain together on this machine, the producer idle.
    """
    conn = psycopg2.connect(settings.database_url, connect_timeout=5)
    try:
        target = _applied(conn) + n
    finally:
        conn.close()
    rate = _processes_drain(
        settings,
        n,
        ["relay", "consumer"],
        workdir,
        lambda c: _applied(c) >= target,
        LAST_APPLIED,
    )
    return dataclasses.replace(rate, name=f"pipeline drain {n}")


def _processes_drain(settings, n, kinds, workdir, drained, last_query) -> Rate:
    """Start worker processes, seed ``n`` rows, time from the seed's commit to ``last_query``."""
    from harness.pytest_plugins.workers import WorkerProcess

    procs = [WorkerProcess.start(kind, settings, workdir) for kind in kinds]
    conn = psycopg2.connect(settings.database_url, connect_timeout=5)
    try:
        # Vacuum before seeding, not while the workers drain. They are running: they can
        # finish before a clock read after the seed, so the drain is timed from its commit.
        _vacuum_analyze_outbox(conn)  # autocommit from here on
        seeded_at = seed_outbox(settings.database_url, make_events(n), analyze=False)
        busy_before = cpu.host_busy()
        _wait_until(lambda: drained(conn), 180)
        busy = cpu.busy_share(busy_before, cpu.host_busy())
        with conn.cursor() as cur:
            cur.execute(last_query, {"t": seeded_at})
            seconds = float(cur.fetchone()[0])
    finally:
        for proc in procs:
            proc.stop()
        conn.close()
    return Rate("drain", n, seconds, host_busy=busy)


def e2e_latency(settings: Settings, rate_per_s: float, seconds: float, workdir) -> dict:
    """S4: insert outbox rows at a fixed rate with relay and consumer running; latency stats."""
    from harness.pytest_plugins.workers import WorkerProcess

    relay = WorkerProcess.start("relay", settings, workdir)
    consumer = WorkerProcess.start("consumer", settings, workdir)
    conn = psycopg2.connect(settings.database_url, connect_timeout=5)
    try:
        busy_before = cpu.host_busy()
        total, warm_from = _produce(conn, rate_per_s, seconds)
        busy = cpu.busy_share(busy_before, cpu.host_busy())
        _wait_until(lambda: _applied(conn) >= total, 60)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
                " (ORDER BY EXTRACT(EPOCH FROM applied_at - event_created)), "
                " max(EXTRACT(EPOCH FROM applied_at - event_created))"
                " FROM inbox WHERE event_created >= %(t)s",
                {"t": warm_from},
            )
            count, (p50, p95, p99), worst = cur.fetchone()
        conn.commit()
        relay_metrics = _metric_values(relay.get("/metrics")[1], "reco_relay_batch")
        consumer_metrics = _metric_values(consumer.get("/metrics")[1], "reco_consumer_batch")
    finally:
        relay.stop()
        consumer.stop()
        conn.close()
    return {
        "relay_mean_batch": _mean(relay_metrics, "reco_relay_batch_size"),
        "relay_mean_batch_ms": _mean(relay_metrics, "reco_relay_batch_seconds", 1000),
        "consumer_mean_batch": _mean(consumer_metrics, "reco_consumer_batch_size"),
        "offered_per_s": round(rate_per_s, 1),
        "events": total,
        "measured": count,
        "p50_ms": round(p50 * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(float(worst) * 1000, 2),
        # Near 1: the offered rate took every core, so latency is queueing (see the docs).
        "host_busy": round(busy, 3),
    }


COPY_OUTBOX = "COPY outbox (event_id, event_type, routing_key, payload, headers) FROM STDIN"


def _copy_lines(events: list[InteractionRecorded], request_id: str = "bench") -> list[str]:
    """Outbox rows in COPY text format, rendered ahead so producing costs little CPU."""
    headers = orjson.dumps(
        {"request_id": request_id, "correlation_id": request_id, "event_version": 1}
    ).decode()
    return [
        f"{e.event_id}\t{e.TYPE}\t{e.routing_key}\t\\\\x{e.to_payload().hex()}\t{headers}\n"
        for e in events
    ]


def _produce(conn, rate_per_s: float, seconds: float, tick_s: float = 0.01):
    """Commit rows at ``rate_per_s`` on an absolute schedule; return (count, warm-up end)."""
    lines = _copy_lines(make_events(int(rate_per_s * seconds) + 1), "e2e")
    total, owed, start = 0, 0.0, time.monotonic()
    warm_from = None
    for tick in range(int(seconds / tick_s)):
        owed += rate_per_s * tick_s
        count, owed = int(owed), owed - int(owed)
        if count:
            with conn.cursor() as cur:
                cur.copy_expert(COPY_OUTBOX, io.StringIO("".join(lines[total : total + count])))
                if warm_from is None and tick * tick_s >= min(2.0, seconds / 4):
                    cur.execute("SELECT clock_timestamp()")
                    warm_from = cur.fetchone()[0]
            conn.commit()
            total += count
        delay = start + (tick + 1) * tick_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return total, warm_from


def _metric_values(text: str, prefix: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line.startswith(prefix) and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


def _mean(values: dict[str, float], name: str, scale: float = 1.0) -> float | None:
    count = values.get(f"{name}_count")
    return round(scale * values[f"{name}_sum"] / count, 2) if count else None


def _pending(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return cur.fetchone()[0]


def _applied(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM inbox")
        count = cur.fetchone()[0]
    conn.commit()
    return count


def _wait_until(ready: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark did not finish within {timeout:.0f}s")
        time.sleep(interval)


# -- ratios ----------------------------------------------------------------------------------
def interleaved_ratio(
    baseline: Callable[[], Rate], sut: Callable[[], Rate], rounds: int = 3
) -> dict:
    """Run B, S, B, S, ..., B; ratio_r = S_r / mean(B before, B after); report the median."""
    base = [baseline()]
    subject: list[Rate] = []
    for _ in range(rounds):
        subject.append(sut())
        base.append(baseline())
    ratios = [s.per_s / ((base[i].per_s + base[i + 1].per_s) / 2) for i, s in enumerate(subject)]
    median = statistics.median(ratios)
    return {
        "ratio": round(median, 3),
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
        "noisy": (max(ratios) - min(ratios)) / median > 0.15 if median else True,
        "rounds": [round(r, 3) for r in ratios],
        "baseline": [b.to_dict() for b in base],
        "sut": [s.to_dict() for s in subject],
    }
