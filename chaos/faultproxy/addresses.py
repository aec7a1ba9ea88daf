"""Parse, resolve, bind and print host:port addresses with Go's net package rules and messages."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket

RESOLVE_TIMEOUT = 10.0
BACKLOG = 4096


class AddrError(ValueError):
    """An address Go would refuse; str() is Go's message without the "listen tcp: " prefix."""


def split_host_port(addr: str) -> tuple[str, int]:
    """Split "host:port" like Go's net.SplitHostPort plus its port lookup."""
    if addr.startswith("["):
        close = addr.find("]")
        if close < 0:
            raise AddrError(f"address {addr}: missing ']' in address")
        host, rest = addr[1:close], addr[close + 1 :]
        if not rest.startswith(":"):
            raise AddrError(f"address {addr}: missing port in address")
        port_text = rest[1:]
    else:
        colon = addr.rfind(":")
        if colon < 0:
            raise AddrError(f"address {addr}: missing port in address")
        host, port_text = addr[:colon], addr[colon + 1 :]
        if ":" in host:
            raise AddrError(f"address {addr}: too many colons in address")
    return host, _port(port_text)


def _port(text: str) -> int:
    if text == "":
        return 0
    if text.isascii() and text.isdigit():
        # Past five significant digits it is out of range anyway, and int() refuses 4300.
        digits = text.lstrip("0") or "0"
        number = int(digits) if len(digits) <= 5 else 65536
        if number > 65535:
            raise AddrError(f"address {text}: invalid port")
        return number
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise AddrError(f"lookup tcp/{text}: unknown port") from None


async def resolve(addr: str) -> tuple[str, int]:
    """Resolve "host:port" to (ip, port); ip is "" for a wildcard. IPv4 is preferred, as in Go."""
    if addr == "":
        # Go's resolver reads an empty address as ":0": every interface, a port from the OS.
        return "", 0
    host, port = split_host_port(addr)
    if host == "":
        return "", port
    try:
        return str(ipaddress.ip_address(host.split("%")[0])), port
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        raise AddrError(f"lookup {host}: no such host") from None
    ips = [info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not ips:
        raise AddrError(f"lookup {host}: no such host")
    v4 = [ip for ip in ips if ":" not in ip]
    return (v4 or ips)[0], port


def join(ip: str, port: int) -> str:
    """Print an address as Go's TCPAddr.String does."""
    if ":" in ip:
        return f"[{ip}]:{port}"
    return f"{ip}:{port}"


async def resolved_text(addr: str) -> str:
    """Return what Go's ResolveTCPAddr(addr).String() gives; used to compare listen addresses."""
    ip, port = await resolve(addr)
    return join(ip, port)


def _is_wildcard(ip: str) -> bool:
    return ip in ("", "0.0.0.0", "::")


def bind(ip: str, port: int) -> tuple[socket.socket, str]:
    """Bind and listen with SO_REUSEADDR; return the socket and its address as Go prints it."""
    if _is_wildcard(ip) and socket.has_ipv6:
        # Go listens on one dual-stack IPv6 socket for wildcard addresses.
        try:
            return _bind(socket.AF_INET6, "::", port, dual=True)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
        ip = "0.0.0.0"
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return _bind(family, ip or "0.0.0.0", port, dual=False)


def _bind(family: int, ip: str, port: int, dual: bool) -> tuple[socket.socket, str]:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((ip, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()
    return sock, join(bound[0], bound[1])


def bind_error(ip: str, port: int, exc: OSError) -> str:
    """Word a bind failure as Go does: "listen tcp 127.0.0.1:3310: bind: address already in use"."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    text = text[:1].lower() + text[1:]
    shown = join(ip, port) if ip else f":{port}"
    return f"listen tcp {shown}: bind: {text}"
