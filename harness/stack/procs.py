"""Process helpers: free ports, readiness waits, running as a service user, stopping by pid."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.stack.identity import group_carries, identity, is_ours, marked

log = logging.getLogger("reco.stack")
PORT_ATTEMPTS = 3


class StackError(RuntimeError):
    """A component could not be started, reached or stopped."""


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
    """Tell whether a process with ``pid`` exists (zombies count as gone); not that it is ours."""
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
    """Stop a child this process spawned and has not reaped (so the pid is still its own).

    Signal it, wait for it to exit, SIGKILL after ``timeout``; return True if it ran.
    """
    # Its identity now: once reaped while we wait, its pid may pass to another process.
    return stop_process(pid, identity(pid), timeout, sig)


def stop_process(
    pid: int | None, recorded: str | None, timeout: float = 15.0, sig: int = signal.SIGTERM
) -> bool:
    """Stop ``pid`` only while it is the process whose identity was ``recorded``.

    Signal it, wait for it to exit, SIGKILL after ``timeout``; return True if it ran.
    """
    return _stop(pid, lambda: is_ours(pid, recorded), timeout, sig)


def _stop(pid: int | None, running: Callable[[], bool], timeout: float, sig: int) -> bool:
    if not pid or not running():
        if pid:
            _reap(pid)  # a zombie child still needs collecting
        return False
    if not _send(pid, sig, running):
        return False
    _wait_gone(pid, running, timeout)
    if running():
        _send(pid, signal.SIGKILL, running)
        _wait_gone(pid, running, 5)
    _reap(pid)
    return True


def _wait_gone(pid: int, running: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running():
        _reap(pid)
        time.sleep(0.05)


def _send(pid: int, sig: int, running: Callable[[], bool]) -> bool:
    """Send ``sig`` to ``pid`` if ``running()`` still holds; return whether it was sent."""
    # A pidfd pins the process: checked after opening it, the signal cannot reach a process
    # that took the pid over in between.
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # a kernel without pidfds
        pidfd = None
    try:
        if not running():
            return False
        if pidfd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("pid %d belongs to another user: not ours, left alone", pid)
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True


def kill_group(pgid: int | None, marker: tuple[str, str]) -> None:
    """SIGKILL a process group spawn() made, once a live member shows the ``marker`` it got."""
    if not pgid or pgid == os.getpgrp():
        return
    # The number of a group with a live member cannot pass to another group: one member
    # carrying our marker makes the whole group ours.
    if not group_carries(pgid, *marker):
        _reap(pgid)
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


@contextlib.contextmanager
def stopped_on_failure(proc: subprocess.Popen, marker: tuple[str, str]) -> Iterator[None]:
    """Stop ``proc`` and its group when the block raises (a failed or interrupted start)."""
    try:
        yield
    except BaseException:
        # poll() may have reaped it already (a readiness probe saw it exit): its pid may then
        # belong to another process, so only a child not yet collected is signalled.
        if proc.returncode is None:
            stop_pid(proc.pid, timeout=10)
        kill_group(proc.pid, marker)  # its group, only while a member carries our marker
        raise


def stop_marked(key: str, value: str, timeout: float = 10.0) -> None:
    """Stop every process carrying the ``key=value`` marker, then wait until none remain."""
    for pid, ident in marked(key, value):
        if pid != os.getpid():
            stop_process(pid, ident, timeout=timeout)


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
        proc = subprocess.Popen(  # noqa: S603 - argv of a stack component built here
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


def tail(path: Path, lines: int = 20, offset: int = 0) -> str:
    """Return the last lines of a log file written after byte ``offset``, for error messages."""
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            text = stream.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
