"""Chart geometry: a plot frame mapping time and values to SVG user units, and readable ticks."""

from __future__ import annotations

import math
from dataclasses import dataclass

TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


@dataclass(frozen=True)
class Frame:
    """A plot area inside an SVG: x is unix time in [t0, t1], y a value in [y0, y1]."""

    t0: float
    t1: float
    y0: float = 0.0
    y1: float = 1.0
    log: bool = False
    width: float = 920.0
    height: float = 240.0
    left: float = 64.0
    right: float = 170.0  # room for direct labels at the lines' ends
    top: float = 24.0
    bottom: float = 34.0

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom

    @property
    def plot_right(self) -> float:
        return self.left + self.plot_w

    @property
    def plot_bottom(self) -> float:
        return self.top + self.plot_h

    def x(self, t: float) -> float:
        """Horizontal position of unix time ``t`` (clamped to the plot)."""
        span = self.t1 - self.t0
        frac = (t - self.t0) / span if span > 0 else 0.0
        return self.left + min(max(frac, 0.0), 1.0) * self.plot_w

    def y(self, value: float) -> float:
        """Vertical position of ``value`` (clamped; on a log axis values <= y0 sit on the floor)."""
        if self.log:
            lo, hi = math.log10(self.y0), math.log10(self.y1)
            v = math.log10(value) if value > self.y0 else lo
        else:
            lo, hi, v = self.y0, self.y1, value
        frac = (v - lo) / (hi - lo) if hi > lo else 0.0
        return self.plot_bottom - min(max(frac, 0.0), 1.0) * self.plot_h


def nice_step(span: float, target: int = 5) -> float:
    """A 1-2-5 step that cuts ``span`` into about ``target`` intervals."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    magnitude = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if mult * magnitude >= raw * 0.999:
            return mult * magnitude
    return 10 * magnitude


def nice_max(value: float, floor: float = 1.0) -> float:
    """The smallest round number >= ``value`` (at least ``floor``) to top a linear axis."""
    if value <= 0 or not math.isfinite(value):
        return floor
    step = nice_step(value, 5)
    return max(math.ceil(value / step - 1e-9) * step, floor)


def linear_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values from ``lo`` to ``hi`` inclusive."""
    step = nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 10) for i in range(max(count, 0))]


def log_bounds(values: list[float]) -> tuple[float, float]:
    """Decade bounds covering the positive ``values`` (1 to 10 ms when there are none)."""
    positive = [v for v in values if v > 0]
    if not positive:
        return 1.0, 10.0
    lo = 10 ** math.floor(math.log10(min(min(positive), 1.0)))
    hi = 10 ** math.ceil(math.log10(max(positive)))
    return lo, max(hi, lo * 10)


def log_ticks(lo: float, hi: float) -> list[float]:
    """One tick per decade."""
    return [10.0**e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]


def time_ticks(t0: float, t1: float, target: int = 10) -> list[float]:
    """Tick times at round offsets from the run's start (1 s, 5 s, 30 s, 5 min, …)."""
    span = t1 - t0
    step = next((s for s in TIME_STEPS if span / s <= target), TIME_STEPS[-1])
    return [t0 + i * step for i in range(int(span // step) + 1)]


def offset_label(seconds: float) -> str:
    """An offset from the run's start: ``45 s``, ``2:30``, ``1:05:00``."""
    s = round(seconds)
    if abs(s) < 120:
        return f"{s} s"
    sign, s = ("-" if s < 0 else ""), abs(s)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{sign}{h}:{m:02d}:{sec:02d}" if h else f"{sign}{m}:{sec:02d}"


def number_label(value: float) -> str:
    """A compact tick label: 0.5, 20, 1.5k, 2M."""
    v = round(value, 6)
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= size * 10 or (abs(v) >= size and (v / size) % 1 == 0):
            return f"{v / size:g}{suffix}"
    return f"{v:g}"


def text_width(text: str, font_px: float = 11.0) -> float:
    """Approximate rendered width of ``text`` (sans-serif), for laying labels out."""
    return len(text) * font_px * 0.58


def shorten(text: str, max_chars: int) -> str:
    """Fit a label in ``max_chars``: ``GET …/recommendations`` keeps the method and path tail."""
    if len(text) <= max_chars:
        return text
    method, _, path = text.partition(" ")
    if path.startswith("/") and method.isupper():
        tail = ""
        for segment in reversed(path.strip("/").split("/")):
            candidate = f"/{segment}{tail}"
            if len(method) + 2 + len(candidate) > max_chars:
                break
            tail = candidate
        if tail:
            return f"{method} …{tail}"
    return "…" + text[-(max_chars - 1) :]


def stack_rows(spans: list[tuple[float, float]], gap: float = 6.0) -> list[int]:
    """Assign each (x, width) span the first row where it overlaps nothing (greedy, in order)."""
    rows: list[float] = []  # right edge of the last span in each row
    out = []
    for x, w in spans:
        for i, right in enumerate(rows):
            if x >= right + gap:
                rows[i] = x + w
                out.append(i)
                break
        else:
            rows.append(x + w)
            out.append(len(rows) - 1)
    return out


def spread(ys: list[float], gap: float, lo: float, hi: float) -> list[float]:
    """Move label positions apart by at least ``gap``, keeping them within [lo, hi] and in order."""
    if not ys:
        return []
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed = [ys[i] for i in order]
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    overflow = placed[-1] - hi
    if overflow > 0:
        placed = [max(y - overflow, lo) for y in placed]
        for i in range(1, len(placed)):
            placed[i] = max(placed[i], placed[i - 1] + gap)
    out = [0.0] * len(ys)
    for rank, i in enumerate(order):
        out[i] = placed[rank]
    return out
