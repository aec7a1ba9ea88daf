"""Locust users: recommendation readers, event writers and status pollers (FastHttpUser)."""

from __future__ import annotations

import collections
import random
import time

import gevent
import orjson
from locust import FastHttpUser, task

from loadtests import workload
from loadtests.runstate import STATE

# Event ids this process wrote successfully; pollers ask for their status.
RECENT_EVENTS: collections.deque[str] = collections.deque(maxlen=5000)
READERS = workload.Zipf(100_000)  # many users, a few very active ones
WRITERS = workload.Zipf(20_000)
ITEMS = workload.Zipf(workload.ITEMS, s=0.9)
JSON = "application/json"
# Timeline keys ("<method> <name>") of the requests the users retry.
READ_ENDPOINT = f"GET {workload.READ_NAME}"
WRITE_ENDPOINT = f"POST {workload.WRITE_NAME}"


def header(resp, name: str) -> str | None:
    """A response header, or None (error responses carry no headers at all)."""
    headers = getattr(resp, "headers", None)
    return headers.get(name) if headers else None


class RecoUser(FastHttpUser):
    """Base: API key, network timeouts, constant-throughput pacing and Retry-After handling."""

    abstract = True
    # Class defaults; the locustfile's init hook replaces them from --request-timeout.
    network_timeout = 5.0
    connection_timeout = 2.0
    max_retries = 0  # retries are ours, recorded and paced, never hidden in the client

    def __init__(self, environment):
        super().__init__(environment)
        self.rng = random.Random()
        self._paced_at: float | None = None

    def on_start(self) -> None:
        # Spread users over one pacing interval so a ramp does not fire in lockstep.
        gevent.sleep(self.rng.uniform(0, 1.0 / STATE.user_rps))

    def wait_time(self) -> float:
        """Constant throughput: one task per 1/user_rps seconds, whatever the latency."""
        interval = 1.0 / STATE.user_rps
        now = time.perf_counter()
        if self._paced_at is None:
            self._paced_at = now
        self._paced_at += interval
        if self._paced_at < now:
            # Behind schedule (slow responses): do not burst to catch up, restart the clock.
            self._paced_at = now
        return self._paced_at - now

    def headers(self, **extra: str) -> dict[str, str]:
        if STATE.request_start:
            extra["X-Request-Start"] = f"t={time.time():.6f}"
        return {"X-API-Key": STATE.api_key, "Accept": "application/json", **extra}

    @staticmethod
    def may_retry(endpoint: str) -> bool:
        """Ask the process's retry budget for one retry; a refusal is counted and not sent."""
        if STATE.retry_budget.try_withdraw():
            return True
        STATE.timeline.refuse(time.time(), endpoint)
        return False

    def backoff(self, attempt: int, resp, endpoint: str) -> bool:
        """Sleep before retrying a shed request; False when it is not worth retrying."""
        if attempt >= STATE.max_attempts:
            return False
        retry_after = workload.parse_retry_after(header(resp, "Retry-After"))
        delay = workload.retry_delay(attempt, retry_after, self.rng, cap=STATE.backoff_cap_s)
        # The budget is asked last: a retry given up for other reasons takes nothing from it.
        if delay is None or not self.may_retry(endpoint):
            return False
        gevent.sleep(delay)
        return True

    @staticmethod
    def judge(resp, expected: tuple[int, ...]) -> None:
        """Mark a response; sheds get their own message so they stay apart from errors."""
        status = resp.status_code or 0
        retry_after = header(resp, "Retry-After")
        if status in expected:
            resp.success()
        elif workload.is_shed(status, retry_after):
            resp.failure(f"shed {status} (Retry-After {retry_after})")
        elif status in workload.SHED_STATUSES:
            resp.failure(f"unexpected {status} without Retry-After (not a shed)")
        elif status == 0:
            resp.failure(f"no response: {type(resp.error).__name__}: {resp.error}")
        else:
            resp.failure(f"unexpected {status}")


class RecommendationReader(RecoUser):
    """Reads recommendations for Zipf-popular users on various surfaces."""

    weight = 7

    @task
    def recommendations(self) -> None:
        uid = workload.user_id(READERS.draw(self.rng))
        path = (
            f"/v1/users/{uid}/recommendations?limit={self.rng.choice(workload.LIMITS)}"
            f"&surface={self.rng.choice(workload.SURFACES)}"
        )
        STATE.retry_budget.deposit()  # a first attempt earns retries
        for attempt in range(1, STATE.max_attempts + 1):
            with self.client.get(
                path, name=workload.READ_NAME, headers=self.headers(), catch_response=True,
                context={"retry": attempt > 1},
            ) as resp:  # fmt: skip
                self.judge(resp, (200,))
                if resp.status_code == 200 and b'"items"' not in (resp.content or b""):
                    resp.failure("200 without items")
            shed = resp.status_code in workload.SHED_STATUSES
            if not shed or not self.backoff(attempt, resp, READ_ENDPOINT):
                return


class EventWriter(RecoUser):
    """Posts event batches with fresh ids and keys; retries unknown outcomes with the same key."""

    weight = 2

    def __init__(self, environment):
        super().__init__(environment)
        self.pending: tuple[str, str, list[str], int] | None = None  # retry after "info"
        self.last_ok: tuple[str, str, list[str]] | None = None

    @task
    def post_events(self) -> None:
        replay = retried = False
        if self.pending is not None:
            # The budget granted this retry when the outcome came back unknown.
            (key, body, ids, tries), retried = self.pending, True
            self.pending = None
        elif self.last_ok is not None and self.rng.random() < STATE.replay_ratio:
            # A deliberate client retry of a request that succeeded: must replay, not re-apply.
            # It is a new request of the workload, not a retry of a failure: it earns retries.
            (key, body, ids), tries, replay = self.last_ok, 0, True
        else:
            batch = workload.event_batch(self.rng, WRITERS, ITEMS, workload.batch_size(self.rng))
            key, body = workload.idempotency_key(), orjson.dumps(batch).decode()
            ids, tries = [e["event_id"] for e in batch["events"]], 0
        if not retried:
            STATE.retry_budget.deposit()
        for attempt in range(1, STATE.max_attempts + 1):
            resp, outcome = self.send(key, body, ids, attempt, replay, retried or attempt > 1)
            if outcome == "ok":
                self.last_ok = (key, body, ids)
                RECENT_EVENTS.extend(ids)
                return
            if outcome == "info":
                # Refused, the write stays with an unknown outcome ("info" its last line): the
                # audit takes it as indeterminate (recovered if applied, allowed if not), the
                # same as a write whose attempts ran out; never lost, never failed-but-applied.
                if tries + 1 < STATE.max_attempts and self.may_retry(WRITE_ENDPOINT):
                    self.pending = (key, body, ids, tries + 1)  # same key next time
                return
            retryable = resp is not None and resp.status_code in (409, 429, 503)
            if not retryable or not self.backoff(attempt, resp, WRITE_ENDPOINT):
                return

    def send(self, key: str, body: str, ids: list[str], attempt: int, replay: bool, retry: bool):
        """One POST, recorded in the history whatever happens (even if the user is killed)."""
        started, status, error, outcome, replayed = time.time(), None, None, "info", False
        resp = None
        try:
            with self.client.post(
                "/v1/events",
                data=body,
                name=workload.WRITE_NAME,
                headers=self.headers(**{"Content-Type": JSON, "Idempotency-Key": key}),
                catch_response=True,
                context={"retry": retry},
            ) as resp:
                status = resp.status_code or None
                self.judge(resp, (202,))
                replayed = header(resp, "Idempotent-Replayed") == "true"
                if replay and status == 202 and not replayed:
                    resp.failure("replay of a completed key was not marked Idempotent-Replayed")
                if status is None:
                    error = f"{type(resp.error).__name__}: {resp.error}"
                elif status >= 300:
                    error = (resp.text or "")[:300]
                outcome = workload.classify(status, resp.error if status is None else None)
        except BaseException as exc:  # GreenletExit/StopUser mid-request: the write may land
            error = f"interrupted: {type(exc).__name__}"
            raise
        finally:
            STATE.history().record(
                t=started, t_end=time.time(), op="write", key=key, event_ids=ids,
                outcome=outcome, status=status,
                latency_ms=round((time.time() - started) * 1000, 3), error=error,
                attempt=attempt, replay=replay, replayed=replayed,
            )  # fmt: skip
        return resp, outcome


class StatusPoller(RecoUser):
    """Polls the status of events this process wrote: each was accepted, so each must exist."""

    weight = 1

    @task
    def status(self) -> None:
        event_id, expected = workload.status_poll(self.rng, RECENT_EVENTS)
        STATE.retry_budget.deposit()  # never retried, but a request of the same client
        with self.client.get(
            f"/v1/events/{event_id}",
            name=workload.STATUS_NAME,
            headers=self.headers(),
            catch_response=True,
        ) as resp:
            self.judge(resp, expected)
