"""The relay-instances benchmark times its drain from the seed's commit, however fast it is."""

from __future__ import annotations

import psycopg2

from harness.bench.workers import (
    make_events,
    pipeline_drain,
    relay_processes_drain,
    seed_outbox,
)


def test_a_drain_by_relays_already_running_is_timed_from_the_commit(settings, tmp_path):
    # A hundred rows drain in milliseconds: a clock read after the seed returned could come
    # after the last mark, leaving no row to time (the quick system benchmark failed so).
    rate = relay_processes_drain(settings, 100, 1, tmp_path)
    assert rate.count == 100
    assert rate.seconds > 0
    assert rate.host_busy is not None and 0 <= rate.host_busy <= 1


def test_the_seed_returns_a_time_no_row_precedes(settings):
    before_commit = seed_outbox(settings.database_url, make_events(10))
    conn = psycopg2.connect(settings.database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT max(created_at) FROM outbox")
            (created,) = cur.fetchone()
    finally:
        conn.close()
    assert created <= before_commit


def test_the_pipeline_drain_is_timed_from_the_commit_to_the_last_apply(settings, tmp_path):
    rate = pipeline_drain(settings, 200, tmp_path)
    assert rate.count == 200 and rate.seconds > 0
    assert rate.host_busy is not None and 0 <= rate.host_busy <= 1
    conn = psycopg2.connect(settings.database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox")
            assert cur.fetchone() == (200, 0)
            cur.execute("SELECT count(*) FROM inbox")
            assert cur.fetchone()[0] == 200
    finally:
        conn.close()


def test_bare_publishers_share_the_messages_and_leave_the_queue_empty(settings):
    from harness.bench.workers import Publisher, bare_publishers

    rate = bare_publishers(settings, 601, 2)
    assert rate.count == 602 and rate.seconds > 0  # 301 each: every process the same share
    publisher = Publisher(settings)
    try:
        assert publisher.depth() == 0
    finally:
        publisher.close()
