"""A small HTTP/1.1 server on asyncio streams: parse requests, write responses, keep-alive."""

from __future__ import annotations

import asyncio
import email.utils
import http
from collections.abc import Awaitable, Callable

# Go's http.Server settings used by Toxiproxy: ReadTimeout 15 s, WriteTimeout 30 s (counted
# from the end of the request, so it covers the handler too), IdleTimeout 60 s.
READ_TIMEOUT = 15.0
WRITE_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0
CLOSE_TIMEOUT = 5.0
MAX_HEADER_BYTES = 1 << 20
# Go reads at most this much of a request's head (its bufio slack) before answering 431.
HEAD_LIMIT = MAX_HEADER_BYTES + 4096
MAX_BODY_BYTES = 64 << 20


class BadRequest(Exception):
    """The client sent something that is not HTTP/1.x."""


class HeadTooLarge(BadRequest):
    """The request line and headers passed HEAD_LIMIT."""


class Request:
    """One parsed request."""

    __slots__ = ("method", "target", "path", "query", "version", "headers", "body")

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str]):
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition("?")
        self.version = version
        self.headers = headers
        self.body = b""

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class Response:
    """A status, headers and a body; Content-Length and Date are added when written."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, body: bytes = b"", headers: list | None = None):
        self.status = status
        self.body = body
        self.headers: list[tuple[str, str]] = headers or []


Handler = Callable[[Request], Awaitable[Response]]


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readline()
    except ValueError:  # longer than the reader's limit, which is HEAD_LIMIT
        raise HeadTooLarge("line too long") from None
    if line and not line.endswith(b"\n"):
        raise BadRequest("unexpected end of request")
    return line.rstrip(b"\r\n")


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None = None
) -> Request | None:
    """Read one request; None when the client closed or idled out between requests."""
    try:
        async with asyncio.timeout(IDLE_TIMEOUT):
            first = await reader.readline()
            # Go skips blank lines before a request line.
            while first in (b"\r\n", b"\n"):
                first = await reader.readline()
    except (TimeoutError, ConnectionError):
        return None
    except ValueError:
        raise HeadTooLarge("request line too long") from None
    if not first:
        return None
    async with asyncio.timeout(READ_TIMEOUT):
        parts = first.rstrip(b"\r\n").decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest("malformed request line")
        headers: dict[str, str] = {}
        size = len(first)
        while True:
            line = await _read_line(reader)
            size += len(line) + 2
            if size > HEAD_LIMIT:
                raise HeadTooLarge("headers too large")
            if not line:
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest("malformed header line")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = Request(parts[0], parts[1], parts[2], headers)
        if writer is not None and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.body = await _read_body(reader, headers)
    return request


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = (await _read_line(reader)).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                while await _read_line(reader):
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise BadRequest("body too large")
            body += await reader.readexactly(size)
            await _read_line(reader)
    length_text = headers.get("content-length")
    if not length_text:
        return b""
    if not length_text.isdigit() or int(length_text) > MAX_BODY_BYTES:
        raise BadRequest("bad content length")
    return await reader.readexactly(int(length_text))


def render(response: Response, keep_alive: bool, head: bool = False) -> bytes:
    """Serialise a response as Go's net/http would frame it."""
    status = response.status
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "status code"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    if status != 204 and status >= 200:
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head or status == 204 else head_bytes + response.body


async def serve_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    """Answer requests on one connection until it closes, idles out or errs."""
    try:
        while True:
            try:
                request = await read_request(reader, writer)
            except (BadRequest, TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
                # Go's net/http answers these itself, plain text, and closes.
                status = 431 if isinstance(exc, HeadTooLarge) else 400
                body = f"{status} {http.HTTPStatus(status).phrase}".encode()
                plain = [("Content-Type", "text/plain; charset=utf-8")]
                writer.write(render(Response(status, body, plain), keep_alive=False))
                break
            if request is None:
                break
            deadline = asyncio.get_running_loop().time() + WRITE_TIMEOUT
            response = await handler(request)
            keep = request.keep_alive
            writer.write(render(response, keep, head=request.method == "HEAD"))
            if not await _flush(writer, deadline) or not keep:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        await _close(writer)


async def _flush(writer: asyncio.StreamWriter, deadline: float) -> bool:
    """Wait for the response to leave; abort and return False once the deadline passes."""
    try:
        async with asyncio.timeout_at(deadline):
            await writer.drain()
    except TimeoutError:
        # A client that stops reading would otherwise hold the connection and its buffer.
        writer.transport.abort()
        return False
    return True


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close the connection; abort it when what is left unsent cannot be flushed."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()
