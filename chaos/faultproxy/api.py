"""The Toxiproxy HTTP API: routes, middleware and handlers, byte-compatible with Go 2.12."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote, unquote, urlsplit

from chaos.faultproxy import VERSION, errors, log
from chaos.faultproxy.collection import ProxyCollection, decode_proxy
from chaos.faultproxy.errors import ApiError
from chaos.faultproxy.gojson import encode
from chaos.faultproxy.httpio import Request, Response
from chaos.faultproxy.metrics import CONTENT_TYPE, Metrics

HANDLER_TIMEOUT = 25.0
PLAIN = "text/plain; charset=utf-8"
Params = dict[str, str]
Handler = Callable[["Api", Request, Params], Awaitable[Response]]

_MACHINE = hashlib.sha256(socket.gethostname().encode()).digest()[:3]
_COUNTER = itertools.count(random.randrange(1 << 24))


def request_id() -> str:
    """Return a 20-character xid, the request id format of the Go server."""
    raw = (
        int(time.time()).to_bytes(4, "big")
        + _MACHINE
        + (os.getpid() & 0xFFFF).to_bytes(2, "big")
        + (next(_COUNTER) & 0xFFFFFF).to_bytes(3, "big")
    )
    return base64.b32hexencode(raw).decode("ascii").lower().rstrip("=")


def _consume(task: asyncio.Future) -> None:
    # A handler that outlived its timeout may still fail; retrieve it so nothing warns.
    if not task.cancelled():
        task.exception()


def json_response(status: int, value: object) -> Response:
    return Response(status, encode(value), [("Content-Type", "application/json")])


def plain_error(status: int, body: bytes) -> Response:
    """Answer like Go's http.Error: text/plain with nosniff (body ends in a newline)."""
    return Response(status, body, [("Content-Type", PLAIN), ("X-Content-Type-Options", "nosniff")])


def error_response(status: int, message: str) -> Response:
    """Answer an API error as Go's apiError: its JSON object through http.Error."""
    return plain_error(status, encode({"error": message, "status": status}) + b"\n")


def clean_path(path: str) -> str:
    """Clean a path like gorilla/mux: resolve . and .., collapse //, keep a trailing slash."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    cleaned = "/" + "/".join(parts)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


class Api:
    """Route requests to handlers over one proxy collection."""

    def __init__(self, proxies: ProxyCollection, metrics: Metrics):
        self.proxies = proxies
        self.metrics = metrics
        self.lock = asyncio.Lock()

    async def handle(self, request: Request) -> Response:
        """Answer one request, with Go's routing, middleware and error framing."""
        target = request.path
        if not target.startswith("/"):
            target = urlsplit(target).path
        path = unquote(target)
        cleaned = clean_path(path)
        if cleaned != path:
            location = quote(cleaned) + (f"?{request.query}" if request.query else "")
            return Response(301, b"", [("Location", location)])
        handler, params, path_known = _route(request.method, cleaned)
        if handler is None:
            if path_known:
                return Response(405)
            return plain_error(404, b"404 page not found\n")
        rid = request_id()
        log.debug("Request", method=request.method, path=cleaned, request_id=rid)
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            response = plain_error(403, b"User agent not allowed\n")
        else:
            response = await self._run(handler, request, params)
        response.headers.insert(0, ("X-Toxiproxy-Request-Id", rid))
        return response

    async def _run(self, handler: Handler, request: Request, params: Params) -> Response:
        task = asyncio.ensure_future(handler(self, request, params))
        task.add_done_callback(_consume)
        try:
            # Shielded: like Go's TimeoutHandler, a slow operation keeps running.
            return await asyncio.wait_for(asyncio.shield(task), HANDLER_TIMEOUT)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except TimeoutError:
            return error_response(503, "request timed out")
        except Exception as exc:  # noqa: BLE001 - a bug must answer 500, not drop the client
            log.error("Handler failed", error=repr(exc))
            return error_response(500, str(exc))

    def proxy(self, params: Params):
        return self.proxies.get(params["proxy"])


async def reset(api: Api, request: Request, params: Params) -> Response:
    async with api.lock:
        await api.proxies.reset()
    return Response(204)


async def proxy_index(api: Api, request: Request, params: Params) -> Response:
    return json_response(200, api.proxies.to_json())


async def proxy_create(api: Api, request: Request, params: Params) -> Response:
    fields = decode_proxy(request.body, {"name": "", "listen": "", "upstream": "", "enabled": True})
    if not fields["name"]:
        raise errors.missing("name")
    if not fields["upstream"]:
        raise errors.missing("upstream")
    async with api.lock:
        proxy = await api.proxies.create(
            fields["name"], fields["listen"], fields["upstream"], fields["enabled"]
        )
    return json_response(201, proxy.to_json())


async def populate(api: Api, request: Request, params: Params) -> Response:
    async with api.lock:
        done, problem = await api.proxies.populate(request.body)
    payload: dict[str, object] = {}
    if problem is not None:
        payload = {"error": problem.message, "status": problem.status}
    payload["proxies"] = [proxy.to_json() for proxy in done] or None
    return json_response(problem.status if problem else 201, payload)


async def proxy_show(api: Api, request: Request, params: Params) -> Response:
    return json_response(200, api.proxy(params).to_json())


async def proxy_update(api: Api, request: Request, params: Params) -> Response:
    async with api.lock:
        proxy = api.proxy(params)
        current = {"listen": proxy.listen, "upstream": proxy.upstream, "enabled": proxy.enabled}
        fields = decode_proxy(request.body, current)
        await proxy.update(fields["listen"], fields["upstream"], fields["enabled"])
    return json_response(200, proxy.to_json())


async def proxy_delete(api: Api, request: Request, params: Params) -> Response:
    async with api.lock:
        api.proxies.remove(params["proxy"])
    return Response(204)


async def toxic_index(api: Api, request: Request, params: Params) -> Response:
    return json_response(200, api.proxy(params).toxics.to_json())


async def toxic_create(api: Api, request: Request, params: Params) -> Response:
    async with api.lock:
        toxic = api.proxy(params).toxics.add_json(request.body)
    return json_response(200, toxic.to_json())


async def toxic_show(api: Api, request: Request, params: Params) -> Response:
    return json_response(200, api.proxy(params).toxics.get(params["toxic"]).to_json())


async def toxic_update(api: Api, request: Request, params: Params) -> Response:
    async with api.lock:
        toxic = api.proxy(params).toxics.update_json(params["toxic"], request.body)
    return json_response(200, toxic.to_json())


async def toxic_delete(api: Api, request: Request, params: Params) -> Response:
    async with api.lock:
        api.proxy(params).toxics.remove(params["toxic"])
    return Response(204)


async def version(api: Api, request: Request, params: Params) -> Response:
    body = f'{{"version": "{VERSION}"}}\n'.encode()
    return Response(200, body, [("Content-Type", "application/json;charset=utf-8")])


async def metrics(api: Api, request: Request, params: Params) -> Response:
    return Response(200, api.metrics.render(api.proxies), [("Content-Type", CONTENT_TYPE)])


# Templates and methods as registered in Go's api.go; /metrics answers any method.
ROUTES: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
    (("reset",), {"POST": reset}),
    (("proxies",), {"GET": proxy_index, "POST": proxy_create}),
    (("populate",), {"POST": populate}),
    (
        ("proxies", "{proxy}"),
        {"GET": proxy_show, "POST": proxy_update, "PATCH": proxy_update, "DELETE": proxy_delete},
    ),
    (("proxies", "{proxy}", "toxics"), {"GET": toxic_index, "POST": toxic_create}),
    (
        ("proxies", "{proxy}", "toxics", "{toxic}"),
        {"GET": toxic_show, "POST": toxic_update, "PATCH": toxic_update, "DELETE": toxic_delete},
    ),
    (("version",), {"GET": version}),
    (("metrics",), {"*": metrics}),
]


def _route(method: str, path: str) -> tuple[Handler | None, Params, bool]:
    """Return (handler, params, path_matched_some_route)."""
    segments = path[1:].split("/")
    path_known = False
    for template, methods in ROUTES:
        if len(template) != len(segments):
            continue
        params: Params = {}
        for pattern, segment in zip(template, segments, strict=True):
            if pattern.startswith("{"):
                if not segment:
                    break
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                break
        else:
            handler = methods.get(method) or methods.get("*")
            if handler is not None:
                return handler, params, True
            path_known = True
    return None, {}, path_known
