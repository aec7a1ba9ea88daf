"""Relay and consumer against their bare baselines (B4, B5), end-to-end latency and growth.

Built on harness/bench/workers.py: the same messages, flags and queue type for a baseline
and the component it is compared with, interleaved rounds (docs/performance.md).
"""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg2

from harness.bench import workers as bench
from harness.bench.http import summary
from harness.bench.sampler import CpuSampler
from service.db.connect import connect
from service.settings import Settings
from workers import outbox
from workers.topology import FEATURE_CONSUMER


def relay_vs_publish(
    settings: Settings, sampler: CpuSampler, n: int, rounds: int, per_message_n: int
) -> dict[str, Any]:
    """B4a/B4b/B4c bare publishes and S2 the relay draining ``n`` rows; R_relay = S2 / B4b."""
    messages = bench.messages_for(bench.make_events(n))
    bench.bare_publish_pipelined(settings, messages[: max(1, n // 10)])  # warm-up, discarded
    result = bench.interleaved_ratio(
        sampler.wrap("B4b", lambda: bench.bare_publish_pipelined(settings, messages)),
        sampler.wrap("S2", lambda: bench.relay_drain(settings, n)),
        rounds,
    )
    per_message = sampler.wrap(
        "B4a", lambda: bench.bare_publish_per_message(settings, messages[:per_message_n])
    )()
    no_confirm = sampler.wrap("B4c", lambda: bench.bare_publish_no_confirm(settings, messages))()
    relay = statistics.median(r["per_s"] for r in result["sut"])
    bare = statistics.median(b["per_s"] for b in result["baseline"])
    return {
        "ratios": {
            "R_relay": _ratio(result),
            "R_relay_per_message": {"median": round(relay / per_message.per_s, 3), "info": True},
            "R_batchgain": {"median": round(bare / per_message.per_s, 3), "info": True},
        },
        "absolute": {
            "relay_events_per_s": round(relay, 1),
            "B4b_pipelined_per_s": round(bare, 1),
            "B4a_per_message_per_s": round(per_message.per_s, 1),
            "B4c_no_confirm_per_s": round(no_confirm.per_s, 1),
        },
        "cpu_s_per_1k": {
            "B4b bare pipelined confirms": sampler.per_1k("B4b"),
            "S2 relay": sampler.per_1k("S2"),
            "B4a bare per-message confirm": sampler.per_1k("B4a"),
            "B4c bare no confirms": sampler.per_1k("B4c"),
            "cost_ratio R_relay": _cost(sampler, "S2", "B4b"),
        },
        "config": {"events": n, "batch": settings.relay_batch_size, "window": 256},
    }


def claim_mark_loop(settings: Settings, sampler: CpuSampler, n: int) -> dict[str, Any]:
    """B6: the relay's SQL alone (claim, mark + COMMIT + claim) over ``n`` seeded rows."""
    bench.seed_outbox(settings.database_url, bench.make_events(n))

    def loop() -> bench.Rate:
        conn = connect(settings, "relay")
        conn.autocommit = True  # transactions spelled out, as in the relay
        batch, done = settings.relay_batch_size, 0
        try:
            with conn.cursor() as cur:
                cpu, start = time.process_time(), time.perf_counter()
                rows = outbox.claim(cur, batch)
                while rows:
                    done += len(rows)
                    rows = outbox.settle(cur, [r.id for r in rows], {}, claim_limit=batch)
                outbox.finish(cur)
                seconds = time.perf_counter() - start
        finally:
            conn.close()
        return bench.Rate("B6 claim/mark loop", done, seconds, time.process_time() - cpu)

    rate = sampler.wrap("B6", loop)()
    return {
        "absolute": {"B6_claim_mark_rows_per_s": round(rate.per_s, 1)},
        "cpu_s_per_1k": {"B6 bare claim/mark loop (no publishing)": sampler.per_1k("B6")},
        "config": {"rows": n, "batch": settings.relay_batch_size},
    }


def consumer_vs_bare(
    settings: Settings, sampler: CpuSampler, n: int, rounds: int
) -> dict[str, Any]:
    """B5b bare consume+insert+commit and S3 the consumer, ``n`` events each; R_consumer."""
    fresh = lambda: bench.messages_for(bench.make_events(n))  # noqa: E731 - new ids per run
    result = bench.interleaved_ratio(
        sampler.wrap("B5b", lambda: bench.bare_consume_commit(settings, fresh())),
        sampler.wrap("S3", lambda: bench.consumer_drain(settings, fresh())),
        rounds,
    )
    return {
        "ratios": {"R_consumer": _ratio(result)},
        "absolute": {
            "consumer_events_per_s": statistics.median(r["per_s"] for r in result["sut"]),
            "B5b_consume_commit_per_s": statistics.median(b["per_s"] for b in result["baseline"]),
        },
        "cpu_s_per_1k": {
            "B5b bare consume+insert+commit": sampler.per_1k("B5b"),
            "S3 consumer": sampler.per_1k("S3"),
            "cost_ratio R_consumer": _cost(sampler, "S3", "B5b"),
        },
        "config": {
            "events": n,
            "batch": settings.consumer_batch_size,
            "prefetch": settings.consumer_prefetch,
        },
    }


def e2e(
    settings: Settings,
    capacity: float,
    seconds: float,
    workdir: Path,
    pipeline_events: int,
    half_pipeline: bool = True,
) -> dict[str, Any]:
    """S4: commit -> applied latency with relay and consumer processes at half capacity.

    The target's rate is half the relay's solo drain rate (S2). Where the relay alone can
    outrun what relay, broker and consumer sustain together (two shared cores), that rate
    is past the pipeline's knee, so the latency at half the *pipeline's* drain rate is
    measured too (``half_pipeline``), as information.
    """
    result = bench.e2e_latency(settings, capacity / 2, seconds, workdir)
    poll = settings.relay_poll_interval_ms
    latency: dict[str, Any] = {
        "e2e": {
            **result,
            "relay_capacity_per_s": round(capacity, 1),
            "relay_poll_ms": poll,
            "L_e2e_p99_over_poll": round(result["p99_ms"] / poll, 3) if poll else None,
        }
    }
    if half_pipeline:
        whole = bench.pipeline_drain(settings, pipeline_events, workdir)
        at_half = bench.e2e_latency(settings, whole.per_s / 2, seconds, workdir)
        latency["e2e_half_pipeline"] = {
            **at_half,
            "pipeline_capacity_per_s": round(whole.per_s, 1),
            "pipeline_drain_host_busy": round(whole.host_busy or 0.0, 3),
        }
    return {"latency": latency}


def backlog_sweep(
    settings: Settings, sampler: CpuSampler, sizes: list[int], small: int, repeats: int
) -> dict[str, Any]:
    """Drain rate at each backlog size over the pooled rate of small drains around them."""

    def pooled(label: str) -> float:
        rates = [
            sampler.wrap(label, lambda: bench.relay_drain(settings, small))()
            for _ in range(repeats)
        ]
        return sum(r.count for r in rates) / sum(r.seconds for r in rates)

    before = pooled("drain small")
    large = {
        size: sampler.wrap(f"drain {size}", functools.partial(bench.relay_drain, settings, size))()
        for size in sizes
    }
    after = pooled("drain small")
    reference = (before + after) / 2
    ratios = {
        f"R_backlog_{_exp(size)}": {
            "median": round(rate.per_s / reference, 3),
            "min": round(rate.per_s / max(before, after), 3),
            "max": round(rate.per_s / min(before, after), 3),
        }
        for size, rate in large.items()
    }
    return {
        "ratios": ratios,
        "absolute": {
            f"drain_{_exp(small)}_per_s": [round(before, 1), round(after, 1)],
            **{f"drain_{_exp(s)}_per_s": round(r.per_s, 1) for s, r in large.items()},
        },
        "cpu_s_per_1k": {
            f"drain {_exp(small)}": sampler.per_1k("drain small"),
            **{f"drain {_exp(s)}": sampler.per_1k(f"drain {s}") for s in sizes},
        },
        "config": {"small": small, "small_repeats": repeats, "sizes": sizes},
    }


def relay_instances(
    settings: Settings,
    n: int,
    counts: list[int],
    workdir: Path,
    rounds: int = 1,
    bare: bool = False,
) -> dict[str, Any]:
    """Drain rate of k relay processes over one relay's, measured just before and after.

    Order 1, k..., 1, k..., 1: ratio_r = E_k,r / mean(E_1 before, E_1 after). How busy
    the host was during each single-relay drain is recorded beside the rates: context for
    a ratio near 1, not a bound (busy time includes work that more relays may share).
    ``bare`` measures k bare pipelined-confirm publisher processes the same way
    (R_publishers_k): how far the broker and the host let any k publishers scale.
    """
    drain = lambda k, rows=n: bench.relay_processes_drain(settings, rows, k, workdir)  # noqa: E731
    drain(1, max(1, n // 4))  # warm-up (discarded): the first drain after a sweep is slow
    relays = _scaling(drain, counts, rounds)
    ratios = {f"R_relays_{k}": summary(values) for k, values in relays["ratios"].items()}
    absolute = {f"relays_{k}_per_s": rates for k, rates in relays["rates"].items()}
    busy = [r.host_busy for r in relays["solo"] if r.host_busy is not None]
    absolute["relays_1_host_busy"] = [round(b, 3) for b in busy]
    if bare:
        publishers = _scaling(lambda k: bench.bare_publishers(settings, n, k), counts, rounds)
        for k, values in publishers["ratios"].items():
            ratios[f"R_publishers_{k}"] = {**summary(values), "info": True}
        absolute.update({f"publishers_{k}_per_s": v for k, v in publishers["rates"].items()})
    return {
        "ratios": ratios,
        "absolute": absolute,
        "config": {"events": n, "instances": counts, "rounds": rounds, "bare_publishers": bare},
    }


def _scaling(measure, counts: list[int], rounds: int) -> dict[str, Any]:
    """k instances' rate over one's, in the order 1, k..., 1, k..., 1.

    ratio_r = E_k,r / mean(E_1 before, E_1 after); ``measure(k)`` returns a Rate.
    """
    solo = [measure(1)]
    sized: dict[int, list[float]] = {k: [] for k in counts if k != 1}
    for _ in range(rounds):
        for k in sized:
            sized[k].append(measure(k).per_s)
        solo.append(measure(1))
    ones = [r.per_s for r in solo]
    return {
        "solo": solo,
        "ratios": {
            k: [v / ((ones[r] + ones[r + 1]) / 2) for r, v in enumerate(values)]
            for k, values in sized.items()
        },
        "rates": {
            1: [round(x, 1) for x in ones],
            **{k: [round(x, 1) for x in values] for k, values in sized.items()},
        },
    }


def inbox_sweep(
    base: Settings, databases: dict[int, str], sampler: CpuSampler, n: int, rounds: int = 1
) -> dict[str, Any]:
    """Consumer rate with the inbox pre-filled to M ids, over an empty-inbox drain around it.

    ``databases`` maps M to a migrated database of its own; M = 0 is the reference, drained
    before and after every other size.
    """
    settings = {m: _with_database(base, url) for m, url in databases.items()}
    for m, s in settings.items():
        if m:
            prefill_inbox(s.database_url, m)

    def drain(m: int) -> float:
        messages = bench.messages_for(bench.make_events(n))
        return sampler.wrap(
            f"inbox {m}", lambda: bench.consumer_drain(settings[m], messages)
        )().per_s

    sizes = sorted(m for m in settings if m)
    reference = [drain(0)]
    sized: dict[int, list[float]] = {m: [] for m in sizes}
    for _ in range(rounds):
        for m in sizes:
            sized[m].append(drain(m))
            reference.append(drain(0))
    ratios = {}
    for i, m in enumerate(sizes):
        per_round = []
        for r, rate in enumerate(sized[m]):
            slot = r * len(sizes) + i
            per_round.append(rate / ((reference[slot] + reference[slot + 1]) / 2))
        ratios[f"R_inbox_{_exp(m)}"] = summary(per_round)
    return {
        "ratios": ratios,
        "absolute": {
            "consumer_inbox_empty_per_s": [round(x, 1) for x in reference],
            **{f"consumer_inbox_{_exp(m)}_per_s": [round(x, 1) for x in sized[m]] for m in sizes},
        },
        "cpu_s_per_1k": {
            f"consumer inbox {_exp(m) if m else 'empty'}": sampler.per_1k(f"inbox {m}")
            for m in settings
        },
        "config": {"events": n, "inbox_sizes": sizes, "rounds": rounds},
    }


def prefill_inbox(database_url: str, m: int) -> None:
    """Insert ``m`` applied-event ids for the feature consumer, then VACUUM ANALYZE."""
    conn = psycopg2.connect(database_url, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO inbox (consumer, event_id, event_created, applied_at)"
                " SELECT %(c)s, gen_random_uuid(), now() - interval '1 day',"
                " now() - interval '1 day' FROM generate_series(1, %(m)s)",
                {"c": FEATURE_CONSUMER, "m": m},
            )
            cur.execute("VACUUM ANALYZE inbox")
    finally:
        conn.close()


def _with_database(settings: Settings, url: str) -> Settings:
    return bench.bench_settings(url, settings.amqp_url, settings.amqp_namespace)


def _ratio(result: dict[str, Any]) -> dict[str, Any]:
    return {**summary(result["rounds"]), "noisy": result["noisy"]}


def _cost(sampler: CpuSampler, sut: str, base: str) -> float | None:
    s, b = sampler.per_1k(sut), sampler.per_1k(base)
    total_b = sum(b.values())
    return round(sum(s.values()) / total_b, 3) if total_b else None


def _exp(n: int) -> str:
    return f"1e{len(str(n)) - 1}" if str(n).rstrip("0") == "1" else str(n)
