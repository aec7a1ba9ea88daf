"""Fault proxies on every link of the stack, so a fault can target one client→dependency link."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from harness.ports import free_port
from harness.stack.identity import identity
from harness.stack.procs import (
    PORT_ATTEMPTS,
    StackError,
    spawn,
    stopped_on_failure,
    wait_until,
)

# link name -> (client process, dependency)
LINKS = {
    "api_postgres": ("api", "postgres"),
    "relay_postgres": ("relay", "postgres"),
    "relay_rabbitmq": ("relay", "rabbitmq"),
    "consumer_postgres": ("consumer", "postgres"),
    "consumer_rabbitmq": ("consumer", "rabbitmq"),
}
ENV_FOR = {"postgres": "RECO_DATABASE_URL", "rabbitmq": "RECO_AMQP_URL"}


def start_toxiproxy(state_dir: Path, marker: tuple[str, str]) -> dict:
    """Use TOXIPROXY_URL, else a real toxiproxy-server on PATH, else chaos.faultproxy.

    A server started here carries ``marker`` in its environment and is stopped again when it
    does not become ready.
    """
    external = os.environ.get("TOXIPROXY_URL")
    if external:
        return {"url": external.rstrip("/"), "kind": "external", "pid": None}
    port = free_port()
    binary = shutil.which("toxiproxy-server")
    argv = [binary] if binary else [sys.executable, "-m", "chaos.faultproxy"]
    kind = "go-binary" if binary else "faultproxy"
    proc = spawn(
        argv + ["-host", "127.0.0.1", "-port", str(port)],
        state_dir / "toxiproxy.log",
        env={**os.environ, marker[0]: marker[1]},
        cwd=Path(__file__).resolve().parents[2],
    )
    url = f"http://127.0.0.1:{port}"
    from chaos.faultproxy.client import Client

    def ready() -> bool:
        if proc.poll() is not None:
            raise StackError(f"{kind} exited with {proc.returncode}")
        with Client(url, timeout=1) as client:
            client.version()
        return True

    with stopped_on_failure(proc, marker):
        wait_until(ready, 15, "toxiproxy")
    return {
        "url": url,
        "port": port,
        "kind": kind,
        "pid": proc.pid,
        "pgid": proc.pid,
        "identity": identity(proc.pid),
        "log": str(state_dir / "toxiproxy.log"),
    }


def create_links(toxiproxy_url: str, upstreams: dict[str, str]) -> dict[str, str]:
    """Create one proxy per link (replacing stale ones); return link -> listen address.

    A proxy already in place to the same upstream, enabled and without toxics, is kept: the
    apps connected through it keep their links (a moved port would strand them).
    """
    from chaos.faultproxy.client import Client, NotFound

    listens = {}
    with Client(toxiproxy_url) as client:
        existing = client.proxies()
        for name, (_client, dependency) in LINKS.items():
            parts = urlsplit(upstreams[dependency])
            upstream = f"{parts.hostname}:{parts.port}"
            proxy = existing.get(name) or {}
            if proxy.get("upstream") == upstream and proxy["enabled"] and not proxy.get("toxics"):
                listens[name] = proxy["listen"]
                continue
            try:
                client.delete_proxy(name)
            except NotFound:
                pass
            listens[name] = _create_on_free_port(client, name, upstream)
    return listens


def _create_on_free_port(client, name: str, upstream: str) -> str:
    """Create the proxy on a port outside the ephemeral range; return its listen address.

    Not "127.0.0.1:0": a disabled proxy re-binds its port when enabled again, and while it is
    down an ephemeral port can become some outgoing connection's local port.
    """
    from chaos.faultproxy.client import ToxiproxyError

    attempt = 1
    while True:
        try:
            return client.create_proxy(name, upstream, listen=f"127.0.0.1:{free_port()}")["listen"]
        except ToxiproxyError as exc:
            # Taken between free_port() and the proxy's bind: try another port.
            if "address already in use" not in str(exc) or attempt >= PORT_ATTEMPTS:
                raise
            attempt += 1


def through(url: str, listen: str) -> str:
    """Rewrite a dependency URL so it goes through the proxy listening on ``listen``."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}{listen}"))


def endpoint(url: str | None) -> str | None:
    """The host:port a dependency URL points at (credentials and path left out)."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def proxied(app: str, env_key: str) -> bool:
    """Whether ``app`` reaches the dependency behind ``env_key`` through a link of its own."""
    return any(client == app and ENV_FOR[dep] == env_key for client, dep in LINKS.values())


def app_env(app: str, urls: dict[str, str], listens: dict[str, str]) -> dict[str, str]:
    """Environment overrides that route ``app``'s dependencies through its links."""
    env = {}
    for name, (client, dependency) in LINKS.items():
        if client == app and name in listens:
            env[ENV_FOR[dependency]] = through(urls[dependency], listens[name])
    return env
