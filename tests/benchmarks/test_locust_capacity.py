"""The load generator's own capacity on this machine: requests/s per core of Locust.

Profiles must stay well below it, or the generator (not the service) sets the numbers.
Two measurements against a trivial asyncio HTTP server on loopback: a bare FastHttpUser
with no wait, and our real user mix (loadtests/locustfile.py, with its per-second timeline
and history) paced far above what it can deliver. The server and Locust are pinned to
different cores when taskset exists. Run with --benchmark-enable; the numbers go to
docs/load.md.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The CI tier measures for half as long: the alarm is a collapse, not a percentage.
WARMUP_S, MEASURE_S = (3, 5) if os.environ.get("RECO_BENCH_QUICK") else (3, 10)
USERS = 32

SERVER = textwrap.dedent(
    """
    import asyncio, sys

    def response(status, body):
        head = f"HTTP/1.1 {status}\\r\\nContent-Type: application/json\\r\\n"
        return (head + f"Content-Length: {len(body)}\\r\\n\\r\\n").encode() + body

    GET, POST = response("200 OK", b'{"items":[]}'), response("202 Accepted", b"{}")

    class Http(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buffer = transport, b""

        def data_received(self, data):
            self.buffer += data
            while b"\\r\\n\\r\\n" in self.buffer:
                head, _, rest = self.buffer.partition(b"\\r\\n\\r\\n")
                length = 0
                for line in head.split(b"\\r\\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(rest) < length:
                    return
                self.buffer = rest[length:]
                self.transport.write(POST if head.startswith(b"POST") else GET)

    async def main(port):
        server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main(int(sys.argv[1])))
    """
)

HAMMER = textwrap.dedent(
    f"""
    import json, time
    import gevent, psutil
    from locust import FastHttpUser, constant, events, task

    class Hammer(FastHttpUser):
        wait_time = constant(0)
        network_timeout = 5.0
        connection_timeout = 2.0

        @task
        def hit(self):
            self.client.get("/")

    def snapshot(environment, process):
        cpu = process.cpu_times()
        return cpu.user + cpu.system, environment.stats.total.num_requests, time.time()

    def mark(environment):
        process = psutil.Process()
        gevent.sleep({WARMUP_S})
        cpu0, n0, t0 = snapshot(environment, process)
        gevent.sleep({MEASURE_S})
        cpu1, n1, t1 = snapshot(environment, process)
        data = {{"requests": n1 - n0, "cpu_s": cpu1 - cpu0, "wall_s": t1 - t0}}
        print("CAPACITY " + json.dumps(data), flush=True)

    @events.test_start.add_listener
    def start(environment, **_kw):
        gevent.spawn(mark, environment)
    """
)


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() > 1 else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def capacity_enabled(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("benchmark_enable", default=False):
        pytest.skip("generator capacity is measured only with --benchmark-enable")


@pytest.fixture
def trivial_server(capacity_enabled, tmp_path: Path) -> Iterator[str]:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = free_port()
    proc = subprocess.Popen([*pinned(0), sys.executable, str(script), str(port)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def report(benchmark, name: str, requests: float, cpu_s: float, wall_s: float) -> dict:
    result = {
        "rps": round(requests / wall_s, 1),
        "cpu_cores_used": round(cpu_s / wall_s, 3),
        "rps_per_core": round(requests / cpu_s, 1) if cpu_s else None,
        "ms_cpu_per_request": round(1000 * cpu_s / requests, 4) if requests else None,
    }
    benchmark.extra_info.update(result)
    print(f"\n{name}: {json.dumps(result)}")
    return result


def test_bare_fasthttpuser_capacity(benchmark, trivial_server: str, tmp_path: Path) -> None:
    locustfile = tmp_path / "hammer.py"
    locustfile.write_text(HAMMER)
    argv = [*pinned(1), sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
            "--host", trivial_server, "-u", str(USERS), "-r", str(USERS),
            "-t", f"{WARMUP_S + MEASURE_S + 2}s", "--only-summary"]  # fmt: skip

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)

    proc = benchmark.pedantic(run, rounds=1, iterations=1)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("CAPACITY "))
    data = json.loads(line.removeprefix("CAPACITY "))
    result = report(benchmark, "bare FastHttpUser", data["requests"], data["cpu_s"], data["wall_s"])
    assert result["rps"] > 100


def test_reco_user_mix_capacity(benchmark, trivial_server: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    duration = WARMUP_S + MEASURE_S + 2
    argv = [*pinned(1), sys.executable, "-m", "locust", "-f",
            str(ROOT / "loadtests" / "locustfile.py"), "--headless", "--host", trivial_server,
            "--profile", "steady", "-u", str(USERS), "-t", f"{duration}s", "--user-rps", "1000",
            "--run-dir", str(out), "--guardrails", "off", "--metrics-url", "off",
            "--only-summary"]  # fmt: skip

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)

    benchmark.pedantic(run, rounds=1, iterations=1)
    rows = [json.loads(x) for x in (out / "timeline.jsonl").read_text().splitlines() if x]
    start = rows[0]["t"] + WARMUP_S
    plateau = [r for r in rows if start <= r["t"] < start + MEASURE_S and "cpu" in r]
    requests = sum(c["n"] for r in plateau for c in r["endpoints"].values())
    cpu_s = sum(r["cpu"] for r in plateau) / 100.0
    result = report(benchmark, "reco user mix", requests, cpu_s, len(plateau))
    assert result["rps"] > 100
