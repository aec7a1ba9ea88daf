"""A thin Toxiproxy API client with explicit timeouts, for our own chaos code."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests

DEFAULT_URL = "http://127.0.0.1:8474"
DEFAULT_TIMEOUT = 5.0


class ToxiproxyError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotFound(ToxiproxyError):
    """404: no such proxy or toxic."""


class AlreadyExists(ToxiproxyError):
    """409: a proxy or toxic of that name exists."""


class BadRequest(ToxiproxyError):
    """400: the request body or a field was rejected."""


_ERRORS = {404: NotFound, 409: AlreadyExists, 400: BadRequest}


class Client:
    """Call a Toxiproxy-compatible API; every request has a timeout (toxiproxy-python has none)."""

    def __init__(self, url: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.url = (url or os.environ.get("TOXIPROXY_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.session.request(method, self.url + path, json=body, timeout=self.timeout)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text.strip()
            raise _ERRORS.get(response.status_code, ToxiproxyError)(response.status_code, message)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- server ---------------------------------------------------------------------------

    def version(self) -> str:
        """Return the server version, e.g. "2.12.0"."""
        return self._call("GET", "/version")["version"]

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")

    def populate(self, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create or replace proxies from dicts with name, listen, upstream[, enabled]."""
        return self._call("POST", "/populate", proxies)["proxies"] or []

    def metrics(self) -> str:
        """Return the Prometheus text from /metrics."""
        response = self.session.get(self.url + "/metrics", timeout=self.timeout)
        response.raise_for_status()
        return response.text

    # -- proxies --------------------------------------------------------------------------

    def proxies(self) -> dict[str, dict[str, Any]]:
        return self._call("GET", "/proxies")

    def get_proxy(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/proxies/{_seg(name)}")

    def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", enabled: bool = True
    ) -> dict[str, Any]:
        """Create a proxy; the answer's listen holds the port actually bound."""
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        return self._call("POST", "/proxies", body)

    def update_proxy(self, name: str, **fields: Any) -> dict[str, Any]:
        """Change listen, upstream or enabled (PATCH)."""
        return self._call("PATCH", f"/proxies/{_seg(name)}", fields)

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{_seg(name)}")

    def disable(self, name: str) -> dict[str, Any]:
        """Close the listener and every connection: clients get refused."""
        return self.update_proxy(name, enabled=False)

    def enable(self, name: str) -> dict[str, Any]:
        return self.update_proxy(name, enabled=True)

    @contextlib.contextmanager
    def down(self, name: str) -> Iterator[None]:
        """Disable a proxy for the duration of the block."""
        self.disable(name)
        try:
            yield
        finally:
            self.enable(name)

    # -- toxics ---------------------------------------------------------------------------

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/proxies/{_seg(proxy)}/toxics")

    def add_toxic(
        self,
        proxy: str,
        type: str,  # noqa: A002 - the API's own field name
        stream: str = "downstream",
        name: str | None = None,
        toxicity: float = 1.0,
        **attributes: int,
    ) -> dict[str, Any]:
        """Add a toxic, e.g. add_toxic("pg", "latency", latency=100, jitter=10).

        Latency is one-way: add one per stream for a round-trip delay. A reset_peer
        toxic stays until removed; its timeout is the delay after the first data.
        """
        body = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        return self.create_toxic(proxy, body)

    def create_toxic(self, proxy: str, toxic: dict[str, Any]) -> dict[str, Any]:
        """POST a toxic as given: any attribute names, an empty name for the server's default."""
        return self._call("POST", f"/proxies/{_seg(proxy)}/toxics", toxic)

    def update_toxic(
        self, proxy: str, name: str, toxicity: float | None = None, **attributes: int
    ) -> dict[str, Any]:
        """Merge new attributes (and toxicity) into a toxic."""
        body: dict[str, Any] = {"attributes": attributes}
        if toxicity is not None:
            body["toxicity"] = toxicity
        return self.patch_toxic(proxy, name, body)

    def patch_toxic(self, proxy: str, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH a toxic with changes as given (attributes, toxicity)."""
        return self._call("PATCH", f"/proxies/{_seg(proxy)}/toxics/{_seg(name)}", changes)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{_seg(proxy)}/toxics/{_seg(name)}")

    @contextlib.contextmanager
    def toxic(self, proxy: str, type: str, **kwargs: Any) -> Iterator[dict[str, Any]]:  # noqa: A002
        """Apply a toxic for the duration of the block."""
        created = self.add_toxic(proxy, type, **kwargs)
        try:
            yield created
        finally:
            with contextlib.suppress(NotFound):
                self.remove_toxic(proxy, created["name"])


def _seg(name: str) -> str:
    """A proxy or toxic name as one path segment: "#", "?", "%" and "/" escaped, not cut."""
    return quote(name, safe="")
