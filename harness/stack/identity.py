"""Which process a pid names: identities taken at spawn and checked before every signal.

A pid is only a number: once its process exits, the kernel hands it to the next process
that starts. The stack records, next to each pid, the process's start time (clock ticks
since boot, field 22 of /proc/<pid>/stat) and the id of the boot; the pair names one process
ever, so a pid taken over by another process never matches. Groups are confirmed through an
environment marker their members inherit from the process spawn() started.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
PROC = Path("/proc")


@functools.cache
def boot_id() -> str:
    """The id of the running boot (start times count from it); fixed until the next boot."""
    return BOOT_ID_FILE.read_text().strip()


def _stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/<pid>/stat (field N at index N - 3), None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return text.rsplit(")", 1)[1].split()


def identity(pid: int | None) -> str | None:
    """Name the live process ``pid`` as "<boot id>:<start ticks>"; None if gone or a zombie."""
    if not pid or pid < 0:
        return None
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return f"{boot_id()}:{fields[19]}"


def is_ours(pid: int | None, recorded: str | None) -> bool:
    """Tell whether ``pid`` is still the process whose identity was ``recorded``."""
    return bool(pid and recorded) and identity(pid) == recorded


def process_group(pid: int) -> int | None:
    """The process group of ``pid`` (None if it is gone)."""
    fields = _stat(pid)
    return int(fields[2]) if fields else None


def carries(pid: int, key: str, value: str) -> bool:
    """Tell whether ``pid`` was started with ``key=value`` in its environment."""
    found = environment(pid, (key,))  # None: gone, or another user's process
    return found is not None and found.get(key) == value


def environment(pid: int, keys: tuple[str, ...]) -> dict[str, str] | None:
    """The values of ``keys`` that ``pid`` was started with, or None when it cannot be read."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    found = {}
    for entry in environ.split(b"\0"):
        key, eq, value = entry.decode(errors="replace").partition("=")
        if eq and key in keys:
            found[key] = value
    return found


def vouched(pid: int | None, key: str, value: str) -> str | None:
    """The identity of ``pid`` when it carries the ``key=value`` marker, else None."""
    ident = identity(pid)
    # The same identity before and after reading the environment: it was this process's.
    if pid and ident and carries(pid, key, value) and is_ours(pid, ident):
        return ident
    return None


def marked(key: str, value: str) -> list[tuple[int, str]]:
    """Find live processes whose environment holds ``key=value``, with their identities."""
    found = []
    for pid in _pids():
        # The environment first: most processes fail it, and only ours need an identity.
        ident = vouched(pid, key, value) if carries(pid, key, value) else None
        if ident:
            found.append((pid, ident))
    return found


def pids_with_env(key: str, value: str) -> list[int]:
    """Find processes whose environment holds ``key=value`` (marks the children we spawned)."""
    return [pid for pid, _ident in marked(key, value)]


def group_carries(pgid: int, key: str, value: str) -> bool:
    """Tell whether a live member of process group ``pgid`` carries the ``key=value`` marker."""
    return any(process_group(pid) == pgid for pid, _ident in marked(key, value))


def _pids() -> list[int]:
    pids = []
    with contextlib.suppress(OSError):
        pids = [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]
    return pids
