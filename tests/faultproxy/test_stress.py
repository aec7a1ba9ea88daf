"""Stress: 200 echo connections while toxics churn every 50 ms for 10 s.

Connections on the proxy that only gets harmless toxics (latency, noop, bandwidth, slicer)
must not lose or reorder a byte; a second proxy churns breaking toxics (timeout, reset_peer,
limit_data, slow_close) to exercise teardown paths. No API call may take 1 s or more, and
afterwards the server must hold no connections, link workers or extra asyncio tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import pytest
from faultproxy_support import gauge, listen_port, wait_for

pytestmark = pytest.mark.timeout(90)

CLEAN_CONNECTIONS = 200
BREAKING_CONNECTIONS = 20
DURATION = 10.0
TICK = 0.05
IO_TIMEOUT = 15.0
CHURN_SCRIPT = Path(__file__).with_name("faultproxy_churn.py")


class EchoServer:
    """An asyncio echo server that tracks its handlers so none outlives the test."""

    def __init__(self) -> None:
        self.handlers: set[asyncio.Task] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.add(asyncio.current_task())
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.handlers.discard(asyncio.current_task())

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


async def clean_client(port: int, deadline: float, rng: random.Random) -> tuple[int, bool]:
    """Echo random messages until the deadline; return (round trips, every byte matched)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent, received = hashlib.sha256(), hashlib.sha256()
    trips, intact = 0, True
    try:
        while time.monotonic() < deadline:
            payload = rng.randbytes(rng.randint(1, 16 * 1024))
            writer.write(payload)
            sent.update(payload)
            echoed = await asyncio.wait_for(reader.readexactly(len(payload)), IO_TIMEOUT)
            received.update(echoed)
            intact = intact and echoed == payload
            trips += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return trips, intact and sent.digest() == received.digest()


async def breaking_client(port: int, deadline: float, rng: random.Random) -> int:
    """Keep reconnecting through a proxy whose toxics break connections; count round trips."""
    trips = 0
    while time.monotonic() < deadline:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            while time.monotonic() < deadline:
                payload = rng.randbytes(rng.randint(1, 4096))
                writer.write(payload)
                await asyncio.wait_for(reader.readexactly(len(payload)), 0.5)
                trips += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            await asyncio.sleep(0.01)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    return trips


def server_gauges(api) -> dict[str, float | None]:
    text = api.get("/metrics").text
    names = (
        "faultproxy_connections_current",
        "faultproxy_link_workers",
        "faultproxy_asyncio_tasks",
    )
    return {name: gauge(text, name) for name in names}


async def run_churner(url: str, clean: str, breaking: str) -> dict:
    """Run the churner as its own process and return its timings and failures."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHURN_SCRIPT),
        url,
        clean,
        breaking,
        str(DURATION),
        str(TICK),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), DURATION + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0
    return json.loads(out)


def test_churning_toxics_under_200_connections(api, toxiproxy, ours, unique):
    baseline = server_gauges(api)
    assert baseline["faultproxy_connections_current"] == 0

    async def scenario() -> tuple[list, list, dict]:
        echo = EchoServer()
        upstream = await echo.start()
        names = [unique("clean"), unique("breaking")]
        ports = []
        for name in names:
            body = {"name": name, "listen": "127.0.0.1:0", "upstream": upstream}
            response = await asyncio.to_thread(api.post, "/proxies", json=body)
            assert response.status_code == 201
            ports.append(listen_port(response.json()))
        deadline = time.monotonic() + DURATION
        try:
            churn = asyncio.ensure_future(run_churner(toxiproxy.url, names[0], names[1]))
            clean = [
                clean_client(ports[0], deadline, random.Random(i)) for i in range(CLEAN_CONNECTIONS)
            ]
            breaking = [
                breaking_client(ports[1], deadline, random.Random(-i))
                for i in range(BREAKING_CONNECTIONS)
            ]
            results = await asyncio.wait_for(
                asyncio.gather(asyncio.gather(*clean), asyncio.gather(*breaking), churn),
                DURATION + 40,
            )
        finally:
            for name in names:
                await asyncio.to_thread(api.delete, f"/proxies/{name}")
            await echo.close()
        return results

    clean, breaking, churn = asyncio.run(scenario())
    durations = churn["durations"]
    print(
        f"\nstress: {sum(t for t, _ in clean)} clean round trips (min {min(t for t, _ in clean)}"
        f" per connection), {sum(breaking)} on the breaking proxy, {len(durations)}"
        f" API calls, slowest {max(durations) * 1000:.0f} ms"
    )
    assert not churn["failures"], churn["failures"][:5]
    assert len(durations) == 2 * int(DURATION / TICK)
    assert max(durations) < 1.0, f"slowest API call {max(durations):.3f}s"
    assert all(intact for _, intact in clean), "bytes lost or reordered"
    assert min(trips for trips, _ in clean) >= 5
    assert sum(breaking) > 0

    def settled() -> bool:
        now = server_gauges(api)
        return (
            now["faultproxy_connections_current"] == 0
            and now["faultproxy_link_workers"] == 0
            and now["faultproxy_asyncio_tasks"] <= baseline["faultproxy_asyncio_tasks"]
        )

    assert wait_for(settled, timeout=15, interval=0.2), server_gauges(api)
