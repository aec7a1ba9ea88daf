"""Process helpers: free ports, readiness waits, running as a service user, stopping by pid."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pwd
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("reco.stack")
PORT_ATTEMPTS = 3


class StackError(RuntimeError):
    """A component could not be started, reached or stopped."""


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL = (32768, 60999)
PORT_PICKS = 64
_recent: collections.deque[int] = collections.deque(maxlen=256)


def ephemeral_range() -> tuple[int, int]:
    """The local ports the kernel hands to outgoing connections (inclusive bounds)."""
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on ``host``, outside the kernel's ephemeral range when possible.

    Servers here come back on the port they had: a killed app restarts on it (clients keep
    their URL) and a fault proxy re-binds it after a "down". An ephemeral port can meanwhile
    become the local port of any outgoing connection (a busy host holds tens of thousands
    in TIME_WAIT), and the restart fails with "address already in use". A port below the
    range is never handed out that way. The OS picks one when no such port is free.
    """
    low, high = ephemeral_range()
    # The wider stretch of unprivileged ports outside [low, high], clear of the low ports
    # that well-known services use.
    first, last = max((max(10_000, low // 2), low - 1), (high + 1, 65_535), key=_width)
    if _width((first, last)) >= PORT_PICKS:
        for port in random.sample(range(first, last + 1), PORT_PICKS):
            # Not one handed out a moment ago: callers often ask for several before binding any.
            if port not in _recent and _bindable(host, port):
                _recent.append(port)
                return port
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _width(span: tuple[int, int]) -> int:
    return span[1] - span[0] + 1


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(host: str, port: int) -> bool:
    # No SO_REUSEADDR: a socket in TIME_WAIT on the port counts as taken, as it would for
    # a client's connect() and for a server that does not set the option.
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def start_on_free_ports(
    start: Callable[[], None],
    clash_markers: tuple[str, ...],
    reroll: Callable[[], None] | None,
    what: str,
) -> None:
    """Run ``start``; when it fails naming a port clash, ``reroll`` the ports and try again.

    free_port() closes the port it found, so another socket can take it before the server
    binds it. ``reroll`` is None when the caller named the ports: those are never swapped.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return start()
        except StackError as exc:
            clash = any(marker in str(exc) for marker in clash_markers)
            if not (clash and reroll is not None and attempt < PORT_ATTEMPTS):
                raise
            log.warning("%s port taken while starting; retrying on fresh ports", what)
            reroll()


def wait_until(
    probe: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> float:
    """Poll ``probe`` until it returns true; return the seconds waited or raise StackError.

    A probe raises StackError to say waiting is pointless (the process exited, the log
    shows a failed boot): that ends the wait at once. Any other exception means "not yet".
    """
    start = time.monotonic()
    deadline = start + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return time.monotonic() - start
        except StackError:
            raise
        except Exception as exc:  # noqa: BLE001 - a probe may fail in any way until ready
            last_error = exc
        time.sleep(interval)
    detail = f": {last_error}" if last_error else ""
    raise StackError(f"{what} not ready after {timeout:.0f}s{detail}")


def is_root() -> bool:
    return os.geteuid() == 0


def as_user(user: str) -> list[str]:
    """Return the argv prefix that drops root to ``user`` (empty when not root)."""
    if not is_root():
        return []
    return ["runuser", "-u", user, "--"]


def chown_tree(path: Path, user: str) -> None:
    """Give ``path`` and everything under it to ``user`` (only when running as root)."""
    if not is_root():
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(
                    os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False
                )


def user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def pid_alive(pid: int | None) -> bool:
    """Tell whether a process with ``pid`` exists (zombies count as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int | None, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
    """Signal ``pid``, wait for it to exit, SIGKILL after ``timeout``; return True if it ran."""
    if not pid_alive(pid):
        if pid:
            _reap(pid)  # a zombie child still needs collecting
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        _reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 5
        while time.monotonic() < kill_deadline and pid_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    _reap(pid)
    return True


def kill_group(pgid: int | None) -> None:
    """SIGKILL a process group this harness created (start_new_session), if any remain."""
    if not pgid:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _reap(pgid, wait_s=5)  # the group's leader is the child spawn() started (e.g. runuser)


def spawned_group(pid: int | None) -> int | None:
    """The process group ``pid`` runs in, when it is one spawn() made (never our own group)."""
    if not pid:
        return None
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return None
    return None if pgid == os.getpgrp() else pgid


def pids_with_env(key: str, value: str) -> list[int]:
    """Find processes whose environment holds ``key=value`` (marks the children we spawned)."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def stop_marked(key: str, value: str, timeout: float = 10.0) -> None:
    """Stop every process carrying the ``key=value`` marker, then wait until none remain."""
    for pid in pids_with_env(key, value):
        if pid != os.getpid():
            stop_pid(pid, timeout=timeout)


# Detached children outlive the call that started them; holding their Popen objects keeps
# Python from warning that a "subprocess is still running" when they are garbage-collected.
_CHILDREN: list[subprocess.Popen] = []


def _reap(pid: int, wait_s: float = 0.0) -> None:
    """Collect an exited child's status, through its Popen when spawn() started it."""
    for proc in _CHILDREN:
        if proc.pid == pid:
            # Popen must see the exit itself: reaped behind its back, it would still warn
            # at collection that the "subprocess is still running".
            if wait_s:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait_s)
            else:
                proc.poll()
            if proc.returncode is not None:
                _CHILDREN.remove(proc)
            return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """Start a detached child in its own session, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    _CHILDREN.append(proc)
    return proc


def tail(path: Path, lines: int = 20) -> str:
    """Return the last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
