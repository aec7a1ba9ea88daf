"""All proxies by name: create, populate, delete and reset with Go's rules and errors."""

from __future__ import annotations

from typing import Any

from chaos.faultproxy import errors
from chaos.faultproxy.errors import ApiError
from chaos.faultproxy.gojson import DecodeError, Pairs, decode_first, decode_struct, kind_of
from chaos.faultproxy.metrics import Metrics
from chaos.faultproxy.proxy import AlreadyStarted, Proxy

PROXY_FIELDS = {"name": "string", "listen": "string", "upstream": "string", "enabled": "bool"}
POPULATE_FIELDS = {"name": "string", "listen": "string", "upstream": "string", "enabled": "nbool"}
POPULATE_TYPE = "[]toxiproxy.Proxy"


def decode_proxy(body: bytes, defaults: dict[str, Any]) -> dict[str, Any]:
    """Decode a proxy body over defaults, as Go decodes into a prefilled Proxy struct."""
    try:
        return decode_struct(decode_first(body), PROXY_FIELDS, "Proxy", "toxiproxy.Proxy", defaults)
    except DecodeError as exc:
        raise errors.bad_body(exc) from None


class ProxyCollection:
    """Own every proxy; callers serialise changes with the API lock."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.proxies: dict[str, Proxy] = {}

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError(*errors.PROXY_NOT_FOUND)
        return proxy

    def to_json(self) -> dict[str, Any]:
        """Return every proxy keyed by name, keys sorted as Go marshals a map."""
        return {name: self.proxies[name].to_json() for name in sorted(self.proxies)}

    async def create(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        """Add a proxy, started when enabled; it is stored only if the start worked."""
        if name in self.proxies:
            raise ApiError(*errors.PROXY_EXISTS)
        proxy = Proxy(self.metrics, name, listen, upstream)
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    def remove(self, name: str) -> None:
        """Stop a proxy, close its connections, and forget it and its toxics."""
        self.get(name).stop()
        del self.proxies[name]

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic; open connections stay open."""
        # A proxy that cannot start keeps its toxics and Go stops there, but Go's map order is
        # random: resetting the others first, as if the failures came last, is one of its outcomes.
        failure: ApiError | None = None
        for proxy in list(self.proxies.values()):
            try:
                await proxy.start()
            except AlreadyStarted:
                pass
            except ApiError as exc:
                failure = failure or exc
                continue
            proxy.toxics.reset()
        if failure is not None:
            raise failure

    async def populate(self, body: bytes) -> tuple[list[Proxy], ApiError | None]:
        """Create or replace proxies from a JSON array; stop at the first failure."""
        try:
            entries = self._decode_populate(body)
        except ApiError as exc:
            return [], exc
        for index, entry in enumerate(entries, start=1):
            if not entry["name"]:
                return [], errors.missing(f"name at proxy {index}")
            if not entry["upstream"]:
                return [], errors.missing(f"upstream at proxy {index}")
        done: list[Proxy] = []
        for entry in entries:
            try:
                done.append(await self._add_or_replace(entry))
            except ApiError as exc:
                return done, exc
        return done, None

    def _decode_populate(self, body: bytes) -> list[dict[str, Any]]:
        try:
            value = decode_first(body)
            if value is None:
                return []
            if isinstance(value, Pairs) or not isinstance(value, list):
                raise DecodeError(
                    f"json: cannot unmarshal {kind_of(value)} into Go value of type {POPULATE_TYPE}"
                )
            entries = []
            for item in value:
                defaults = {"name": "", "listen": "", "upstream": "", "enabled": None}
                entries.append(decode_struct(item, POPULATE_FIELDS, "", POPULATE_TYPE, defaults))
        except DecodeError as exc:
            raise errors.bad_body(exc) from None
        return entries

    async def _add_or_replace(self, entry: dict[str, Any]) -> Proxy:
        enabled = entry["enabled"] is not False
        existing = self.proxies.get(entry["name"])
        if existing is not None:
            if not await existing.differs(entry["listen"], entry["upstream"]):
                # Unchanged proxies keep their toxics and their enabled state.
                return existing
            existing.stop()
        proxy = Proxy(self.metrics, entry["name"], entry["listen"], entry["upstream"])
        if enabled:
            await proxy.start()
        self.proxies[proxy.name] = proxy
        return proxy

    def stop_all(self) -> None:
        """Stop every proxy (server shutdown)."""
        for proxy in self.proxies.values():
            proxy.stop()
