"""Churn toxics on two proxies every tick and print how long each API call took, as JSON.

Run as its own process by the stress test, so the test's busy client loop cannot starve it
of the GIL: python faultproxy_churn.py URL CLEAN_PROXY BREAKING_PROXY DURATION TICK
"""

from __future__ import annotations

import json
import random
import sys
import time

import requests

API_TIMEOUT = 5.0


def harmless_toxic(rng: random.Random, name: str) -> dict:
    """A toxic that delays or reshapes traffic but never loses or reorders a byte."""
    kind = rng.choice(["latency", "noop", "bandwidth", "slicer"])
    attributes = {
        "latency": {"latency": rng.randint(0, 20), "jitter": rng.randint(0, 5)},
        "noop": {},
        "bandwidth": {"rate": rng.randint(5_000, 50_000)},
        "slicer": {"average_size": 512, "size_variation": 128, "delay": rng.randint(0, 200)},
    }[kind]
    return {
        "name": name,
        "type": kind,
        "stream": rng.choice(["upstream", "downstream"]),
        "toxicity": rng.choice([1.0, 1.0, 0.5]),
        "attributes": attributes,
    }


def breaking_toxic(rng: random.Random, name: str) -> dict:
    """A toxic that drops data or closes connections."""
    kind = rng.choice(["timeout", "reset_peer", "limit_data", "slow_close", "latency"])
    attributes = {
        "timeout": {"timeout": rng.choice([0, 100])},
        "reset_peer": {"timeout": rng.choice([0, 50])},
        "limit_data": {"bytes": rng.randint(1_000, 50_000)},
        "slow_close": {"delay": rng.randint(0, 50)},
        "latency": {"latency": rng.randint(0, 20), "jitter": 0},
    }[kind]
    return {
        "name": name,
        "type": kind,
        "stream": rng.choice(["upstream", "downstream"]),
        "attributes": attributes,
    }


class Churner:
    """Add, update and remove toxics, timing each API call."""

    def __init__(self, url: str, session: requests.Session):
        self.url = url
        self.session = session
        self.rng = random.Random(1234)
        self.durations: list[float] = []
        self.failures: list[str] = []
        self.live: dict[str, list[str]] = {}
        self.serial = 0

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        start = time.monotonic()
        response = self.session.request(method, self.url + path, timeout=API_TIMEOUT, **kwargs)
        self.durations.append(time.monotonic() - start)
        return response

    def step(self, proxy: str, make) -> None:
        live = self.live.setdefault(proxy, [])
        action = self.rng.random()
        if live and (action < 0.4 or len(live) >= 6):
            name = live.pop(self.rng.randrange(len(live)))
            response, expected = self.call("DELETE", f"/proxies/{proxy}/toxics/{name}"), 204
        elif live and action < 0.55:
            body = {"toxicity": self.rng.choice([0.0, 0.5, 1.0])}
            name = self.rng.choice(live)
            path = f"/proxies/{proxy}/toxics/{name}"
            response, expected = self.call("PATCH", path, json=body), 200
        else:
            self.serial += 1
            body = make(self.rng, f"t{self.serial}")
            response, expected = self.call("POST", f"/proxies/{proxy}/toxics", json=body), 200
            live.append(body["name"])
        if response.status_code != expected:
            self.failures.append(f"{response.status_code} {response.text}")


def main(argv: list[str]) -> int:
    url, clean, breaking, duration, tick = argv[0], argv[1], argv[2], float(argv[3]), float(argv[4])
    with requests.Session() as session:
        churner = Churner(url, session)
        next_tick = time.monotonic()
        for _ in range(int(duration / tick)):
            try:
                churner.step(clean, harmless_toxic)
                churner.step(breaking, breaking_toxic)
            except requests.RequestException as exc:
                churner.failures.append(repr(exc))
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
    print(json.dumps({"durations": churner.durations, "failures": churner.failures}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
