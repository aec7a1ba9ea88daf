"""In-process checks of chaos.faultproxy internals that the HTTP suite cannot reach."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from chaos.faultproxy import link as link_module
from chaos.faultproxy.link import CHUNK_SIZE, Link
from chaos.faultproxy.toxics import Toxic

pytestmark = pytest.mark.timeout(30)


class RecordingTransport:
    """A destination transport that keeps every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


def make_link(toxic: Toxic) -> tuple[Link, RecordingTransport]:
    """A downstream link through one toxic, writing to a recording transport."""
    transport = RecordingTransport()
    source = SimpleNamespace(transport=None, lost=False)
    dest = SimpleNamespace(transport=transport, lost=False)
    return Link(SimpleNamespace(), "downstream", source, dest, [toxic]), transport


async def until_idle(link: Link) -> None:
    for _ in range(10_000):
        if not link.busy:
            return
        await asyncio.sleep(0)
    raise AssertionError("the link worker did not finish")


def test_link_worker_yields_between_chunks(monkeypatch):
    monkeypatch.setattr(link_module, "TURN_SECONDS", 0.0)  # a turn ends after every chunk

    async def scenario() -> tuple[int, int]:
        link, transport = make_link(Toxic("noop_downstream", "noop", "downstream", 1.0, {}))
        link.feed(b"x" * (8 * CHUNK_SIZE))
        await asyncio.sleep(0)  # the worker's first step runs before this task resumes
        seen_midway = len(transport.writes)
        await until_idle(link)
        return seen_midway, len(transport.writes)

    seen_midway, total = asyncio.run(scenario())
    assert total == 8
    assert seen_midway < total


def test_slicer_without_delay_yields_and_an_update_flushes_the_rest(monkeypatch):
    monkeypatch.setattr(link_module, "TURN_SECONDS", 0.0)
    attributes = {"average_size": 1, "size_variation": 0, "delay": 0}

    async def scenario() -> list[bytes]:
        slicer = Toxic("slicer_downstream", "slicer", "downstream", 1.0, attributes)
        link, transport = make_link(slicer)
        link.feed(b"abcdefgh")
        await asyncio.sleep(0)  # one piece goes out, then the slicer hands the loop back
        assert transport.writes == [b"a"]
        link.update_toxic(slicer)  # as Go: an interrupted slicer sends the rest as one piece
        await until_idle(link)
        return transport.writes

    assert asyncio.run(scenario()) == [b"a", b"bcdefgh"]
