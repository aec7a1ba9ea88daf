"""Prometheus text metrics: Toxiproxy's byte counters, live, plus connection and task gauges."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaos.faultproxy.collection import ProxyCollection
    from chaos.faultproxy.connection import Connection

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ("direction", "proxy", "listener", "upstream")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    pairs = sorted(zip(names, values, strict=True))
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class Metrics:
    """Count bytes and connections; closed connections fold into running totals."""

    def __init__(self) -> None:
        self.open: set[Connection] = set()
        self.closed_bytes: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
        self.accepted: dict[str, int] = defaultdict(int)

    def connection_opened(self, conn: Connection) -> None:
        self.open.add(conn)
        self.accepted[conn.labels[0]] += 1

    def connection_closed(self, conn: Connection) -> None:
        self.open.discard(conn)
        for direction, link in conn.links.items():
            totals = self.closed_bytes[(direction, *conn.labels)]
            totals[0] += link.received
            totals[1] += link.sent

    def _bytes(self) -> dict[tuple[str, ...], list[int]]:
        # Unlike Go, which counts at link close, open links are included on every scrape.
        totals: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
        for key, (received, sent) in self.closed_bytes.items():
            totals[key][0] += received
            totals[key][1] += sent
        for conn in self.open:
            for direction, link in conn.links.items():
                totals[(direction, *conn.labels)][0] += link.received
                totals[(direction, *conn.labels)][1] += link.sent
        return totals

    def render(self, proxies: ProxyCollection) -> bytes:
        """Return the exposition text."""
        out: list[str] = []
        totals = self._bytes()
        for index, (name, text) in enumerate(
            (("received", "read from the source"), ("sent", "written to the destination"))
        ):
            metric = f"toxiproxy_proxy_{name}_bytes_total"
            out.append(f"# HELP {metric} Bytes {text}, by proxy and direction.")
            out.append(f"# TYPE {metric} counter")
            for key in sorted(totals):
                out.append(f"{metric}{_labels(LABELS, key)} {totals[key][index]}")
        out.append("# HELP faultproxy_proxy_connections_current Open client connections per proxy.")
        out.append("# TYPE faultproxy_proxy_connections_current gauge")
        for name in sorted(proxies.proxies):
            count = len(proxies.proxies[name].connections)
            out.append(
                f"faultproxy_proxy_connections_current{_labels(('proxy',), (name,))} {count}"
            )
        out.append("# HELP faultproxy_proxy_connections_total Client connections accepted.")
        out.append("# TYPE faultproxy_proxy_connections_total counter")
        for name in sorted(self.accepted):
            value = self.accepted[name]
            out.append(f"faultproxy_proxy_connections_total{_labels(('proxy',), (name,))} {value}")
        workers = sum(1 for c in self.open for link in c.links.values() if link.busy)
        gauges = (
            (
                "faultproxy_connections_current",
                "Open connections, deleted proxies included.",
                len(self.open),
            ),
            ("faultproxy_link_workers", "Links with chunks in their toxic chain.", workers),
            (
                "faultproxy_asyncio_tasks",
                "Live asyncio tasks in the server.",
                len(asyncio.all_tasks()),
            ),
        )
        for metric, help_text, value in gauges:
            out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", f"{metric} {value}"]
        return ("\n".join(out) + "\n").encode("utf-8")
