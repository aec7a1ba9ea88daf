"""Post-deploy smoke checks against any deployment of the reco API."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests

from service import openapi

SMOKE_USER_PREFIX = "smoke-"  # reserved: events written by this check are recognisable
EXPECTED_SERIES = (
    "flask_http_request_duration_seconds_bucket",
    "reco_http_inflight_requests",
    "reco_db_circuit_open",
)


class Unreachable(RuntimeError):
    """The deployment could not be reached at all (wrong URL, nothing listening)."""


class NotTheApi(Unreachable):
    """Something answers at the URL, but not the reco API's health endpoint."""


@dataclasses.dataclass
class Check:
    """One check's outcome."""

    name: str
    passed: bool
    duration_ms: float
    detail: str = ""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


class Smoke:
    """Run the checks in order against ``url``; report each as it completes."""

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout_s: float = 60,
        slo_ms: float = 500,
        report: Callable[[Check], None] = lambda _c: None,
    ):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.slo_ms = slo_ms
        self.report = report
        self.checks: list[Check] = []
        self.http = requests.Session()

    def _get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.url + path, timeout=5, **kwargs)

    def _run(self, name: str, fn: Callable[[], tuple[bool, str, dict[str, Any]]]) -> Check:
        started = time.monotonic()
        try:
            passed, detail, data = fn()
        except requests.ConnectionError as exc:
            if not self.checks:
                raise Unreachable(
                    f"cannot connect to {self.url}: {exc.__class__.__name__}"
                ) from None
            passed, detail, data = False, f"connection failed: {exc.__class__.__name__}", {}
        except requests.Timeout:
            passed, detail, data = False, "timed out", {}
        except ValueError:  # requests' JSONDecodeError: a proxy's HTML page, a truncated body
            passed, detail, data = False, "the response is not JSON", {}
        check = Check(name, passed, round((time.monotonic() - started) * 1000, 1), detail, data)
        self.checks.append(check)
        self.report(check)
        return check

    @property
    def _auth(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    # -- read-only checks -------------------------------------------------------------
    def read_checks(self) -> None:
        self._run("healthz", lambda: self._status_is("/healthz", 200))
        self._run("readyz", lambda: self._status_is("/readyz", 200))
        self._run("openapi version", self._openapi_version)
        self._run("metrics series", self._metrics)
        self._run("recommendations within SLO", self._recommendations)

    def _status_is(self, path: str, status: int) -> tuple[bool, str, dict]:
        resp = self._get(path)
        if path == "/healthz" and resp.status_code == 404:
            # /healthz never depends on anything, so a 404 means the URL is not the API's base
            # (a path such as /v1 appended, or another service on the port).
            raise NotTheApi(
                f"{self.url}/healthz answered 404: is --url the API's base URL "
                "(scheme, host and port only, without /v1)?"
            )
        detail = f"HTTP {resp.status_code}"
        if resp.status_code != status and "json" in resp.headers.get("Content-Type", ""):
            detail += f": {resp.json().get('detail', '')}"
        return resp.status_code == status, detail, {}

    def _openapi_version(self) -> tuple[bool, str, dict]:
        resp = self._get("/openapi.json")
        served = resp.json().get("info", {}).get("version") if resp.ok else None
        expected = openapi.version()
        return served == expected, f"served {served}, code {expected}", {}

    def _metrics(self) -> tuple[bool, str, dict]:
        text = self._get("/metrics").text
        missing = [s for s in EXPECTED_SERIES if s not in text]
        return not missing, f"missing {missing}" if missing else "all present", {}

    def _recommendations(self) -> tuple[bool, str, dict]:
        started = time.monotonic()
        resp = self._get(
            f"/v1/users/{SMOKE_USER_PREFIX}reader/recommendations?limit=10", headers=self._auth
        )
        elapsed_ms = (time.monotonic() - started) * 1000
        if resp.status_code != 200:
            return False, f"HTTP {resp.status_code}", {}
        errors = list(
            openapi.validator("components/schemas/Recommendations").iter_errors(resp.json())
        )
        if errors:
            return False, f"response does not match the schema: {errors[0].message}", {}
        ok = elapsed_ms <= self.slo_ms
        return ok, f"{elapsed_ms:.0f} ms (SLO {self.slo_ms:.0f} ms)", {"latency_ms": elapsed_ms}

    # -- write checks -----------------------------------------------------------------
    def write_checks(self) -> None:
        user = f"{SMOKE_USER_PREFIX}{uuid.uuid4().hex[:12]}"
        body = {
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "user_id": user,
                    "item_id": 1 + i,
                    "kind": "view",
                    "occurred_at": "2026-01-01T00:00:00Z",
                }
                for i in range(3)
            ]
        }
        key = f'"{uuid.uuid4()}"'
        state: dict[str, Any] = {}
        first = self._run("write batch", lambda: self._write(body, key, state))
        if not first.passed:
            return
        self._run("idempotent replay", lambda: self._replay(body, key, state))
        other = {"events": [dict(body["events"][0], kind="click")]}
        self._run("mismatched replay is 422", lambda: self._mismatch(other, key))
        self._run("events applied end to end", lambda: self._applied(body, state))

    def _post(self, body: dict, key: str) -> requests.Response:
        return self.http.post(
            self.url + "/v1/events",
            json=body,
            timeout=10,
            headers={**self._auth, "Idempotency-Key": key},
        )

    def _write(self, body: dict, key: str, state: dict) -> tuple[bool, str, dict]:
        state["sent_at"] = time.monotonic()
        resp = self._post(body, key)
        state["first"] = resp.content
        return resp.status_code == 202, f"HTTP {resp.status_code}", {}

    def _replay(self, body: dict, key: str, state: dict) -> tuple[bool, str, dict]:
        resp = self._post(body, key)
        same = resp.content == state["first"]
        flagged = resp.headers.get("Idempotent-Replayed") == "true"
        ok = resp.status_code == 202 and same and flagged
        return ok, f"HTTP {resp.status_code}, same body {same}, replay header {flagged}", {}

    def _mismatch(self, body: dict, key: str) -> tuple[bool, str, dict]:
        resp = self._post(body, key)
        return resp.status_code == 422, f"HTTP {resp.status_code}", {}

    def _applied(self, body: dict, state: dict) -> tuple[bool, str, dict]:
        pending = {e["event_id"] for e in body["events"]}
        deadline = state["sent_at"] + self.timeout_s
        last: dict[str, str] = {}
        while pending and time.monotonic() < deadline:
            for event_id in sorted(pending):
                resp = self._get(f"/v1/events/{event_id}", headers=self._auth)
                last[event_id] = (
                    resp.json().get("status", "?") if resp.ok else str(resp.status_code)
                )
                if last[event_id] == "applied":
                    pending.discard(event_id)
            if pending:
                time.sleep(0.05)
        if pending:
            stuck = sorted(set(last.get(e, "?") for e in pending))
            stage = {
                "accepted": "never published (is the relay running?)",
                "published": "published but never applied (is the consumer running?)",
            }
            hint = "; ".join(stage.get(s, s) for s in stuck)
            return (
                False,
                f"{len(pending)} event(s) not applied within {self.timeout_s:.0f} s: {hint}",
                {},
            )
        latency = (time.monotonic() - state["sent_at"]) * 1000
        return True, f"applied after {latency:.0f} ms", {"e2e_latency_ms": latency}

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)
