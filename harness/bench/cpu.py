"""CPU time of process trees and host steal, read from /proc."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and all of its descendants."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes, in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def _host_fields() -> list[int]:
    """The host's CPU line of /proc/stat: user, nice, system, idle, iowait, irq, softirq,
    steal, guest, guest_nice (jiffies since boot)."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def host_times() -> tuple[int, int]:
    """(total jiffies, steal jiffies) of the host since boot."""
    fields = _host_fields()
    return sum(fields), fields[7] if len(fields) > 7 else 0


def host_busy() -> tuple[int, int]:
    """(busy jiffies, total jiffies) of the host since boot; idle and iowait are not busy."""
    user, nice, system, idle, iowait, *rest = _host_fields()[:8]
    busy = user + nice + system + sum(rest)  # irq, softirq and steal: no core was free
    return busy, busy + idle + iowait


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of all cores' time that was busy between two host_busy() readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of CPU time stolen by the hypervisor between two host_times() readings."""
    total = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / total if total > 0 else 0.0


def cumulative_seconds(root: int) -> float:
    """CPU seconds of ``root``'s tree including exited children it reaped (monotonic)."""
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime: a backend that exits is added to its parent's
            # cutime/cstime when reaped, so the sum does not drop when connections close.
            total += sum(int(f) for f in fields[11:15])
    return total / TICKS
