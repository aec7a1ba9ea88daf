"""Sample the CPU of server process trees over time, to charge each measurement its window."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

from harness.bench import cpu
from harness.bench.workers import Rate


class CpuSampler:
    """A thread that records cumulative CPU seconds of named process trees every ``interval``.

    The worker benchmarks set up (seed, fill a queue) before they start their clock and
    report only the timed seconds; a measurement's window is therefore taken as the
    ``seconds`` just before the call returned, read from this timeline.
    """

    def __init__(self, roots: dict[str, Callable[[], int | None]], interval: float = 0.1):
        self.roots = roots
        self.interval = interval
        self.times: list[float] = []
        self.samples: list[dict[str, float]] = []
        self.records: dict[str, list[dict[str, float]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def _sample(self) -> None:
        values = {}
        for name, root in self.roots.items():
            pid = root()
            values[name] = cpu.cumulative_seconds(pid) if pid else 0.0
        self.times.append(time.monotonic())
        self.samples.append(values)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def at(self, moment: float) -> dict[str, float]:
        """Cumulative CPU per tree at ``moment``, interpolated between samples."""
        i = bisect.bisect_left(self.times, moment)
        if i <= 0:
            return dict(self.samples[0])
        if i >= len(self.times):
            return dict(self.samples[-1])
        t0, t1 = self.times[i - 1], self.times[i]
        share = (moment - t0) / (t1 - t0) if t1 > t0 else 1.0
        a, b = self.samples[i - 1], self.samples[i]
        return {k: a[k] + share * (b[k] - a[k]) for k in a}

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each tree used between two monotonic moments."""
        self._sample()  # make sure the end of the window is covered
        before, after = self.at(start), self.at(end)
        return {k: max(0.0, after[k] - before[k]) for k in after}

    def wrap(self, label: str, fn: Callable[[], Rate]) -> Callable[[], Rate]:
        """Call ``fn`` and record the CPU of this process and every tree in its timed window."""

        def measured() -> Rate:
            rate = fn()
            end = time.monotonic()
            used = self.between(end - rate.seconds, end)
            self.records.setdefault(label, []).append(
                {"count": rate.count, "seconds": rate.seconds, "bench_process": rate.cpu_s, **used}
            )
            return rate

        return measured

    def per_1k(self, label: str) -> dict[str, float]:
        """CPU seconds per 1,000 operations per process, pooled over the label's runs."""
        runs = self.records.get(label, [])
        count = sum(r["count"] for r in runs)
        if not count:
            return {}
        keys = [k for k in runs[0] if k not in ("count", "seconds")]
        return {k: round(1000 * sum(r[k] for r in runs) / count, 4) for k in keys}
