"""Inline SVG charts on one shared time axis, with hatched fault windows and phase boundaries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape

from harness.report import scale
from harness.report.scale import Frame
from harness.report.series import Series

PLOT_H = 170.0
ROW_H = 14.0
MIN_FAULT_W = 2.0  # sub-second faults (a poison message) still show as a sliver


@dataclass(frozen=True)
class Style:
    """How one line is drawn: colour plus a dash pattern, so colour is never the only cue."""

    colour: str
    dash: str = ""
    name: str = "solid"
    width: float = 1.8


# Okabe-Ito colours (colour-blind safe), each with its own dash pattern.
PALETTE = (
    Style("#0072B2", "", "solid"),
    Style("#D55E00", "7 4", "dashed"),
    Style("#009E73", "2 3", "dotted"),
    Style("#CC79A7", "9 3 2 3", "dash-dot"),
    Style("#E69F00", "12 4", "long-dashed"),
    Style("#56B4E9", "4 2", "short-dashed"),
    Style("#000000", "1 4", "sparse-dotted"),
)
PERCENTILE_STYLES = {  # p50 solid, p95 dashed, p99 dotted: the order readers expect
    "p50": Style("#0072B2", "", "solid"),
    "p95": Style("#E69F00", "7 4", "dashed"),
    "p99": Style("#D55E00", "2 3", "dotted", 2.2),
}
OFFERED = Style("#555555", "5 5", "grey dashed", 1.4)
TOTAL = Style("#000000", "", "solid black", 2.4)


@dataclass(frozen=True)
class Overlay:
    """What every time chart shares: the time domain, fault windows and phases."""

    t0: float
    t1: float
    faults: tuple[dict, ...] = ()
    phases: tuple[tuple[str, float, float], ...] = ()  # (name, start, end), "all" left out

    def offset(self, t: float) -> str:
        return scale.offset_label(t - self.t0)


def line_chart(
    overlay: Overlay,
    chart_id: str,
    title: str,
    lines: list[tuple[Series, Style]],
    y_label: str,
    *,
    log: bool = False,
    percent: bool = False,
    min_top: float = 1.0,
) -> str:
    """One SVG line chart; None values break lines, every line has a direct label."""
    values = [v for s, _ in lines for v in s.values]
    if log:
        y0, y1 = scale.log_bounds(values)
        ticks = scale.log_ticks(y0, y1)
    else:
        top_value = scale.nice_max(max(values, default=0.0), min_top)
        y0, y1 = 0.0, min(top_value, 100.0) if percent else top_value
        ticks = scale.linear_ticks(y0, y1)
    base = Frame(overlay.t0, overlay.t1, y0, y1, log)
    fault_rows = _fault_label_rows(base, overlay)
    legend = _legend_layout(base, lines)
    top = ROW_H * (max(fault_rows, default=-1) + 1) + 14.0
    bottom = 34.0 + ROW_H * (max((r for r, _ in legend), default=-1) + 1)
    f = Frame(
        overlay.t0, overlay.t1, y0, y1, log, height=top + PLOT_H + bottom, top=top, bottom=bottom
    )
    unit = "%" if percent else ""
    parts = [
        _open(f, chart_id, title, _describe(overlay, title, lines, y_label)),
        _hatch(chart_id),
        _y_axis(f, ticks, y_label, unit),
        _x_axis(f, overlay),
        _fault_windows(f, overlay, chart_id, fault_rows),
        _phase_marks(f, overlay),
        *(_line(f, s, st) for s, st in lines),
        _direct_labels(f, lines),
        _legend(f, lines, legend),
        "</svg>",
    ]
    return "\n".join(p for p in parts if p)


def lanes_chart(overlay: Overlay, chart_id: str, title: str) -> str:
    """A Gantt-like strip: one lane per phase and per fault, on the shared time axis."""
    lanes = [("phase", n, s, e, "") for n, s, e in overlay.phases] + [
        (
            "fault",
            str(fl.get("label") or fl.get("action") or "fault"),
            fl["start"],
            fl["end"],
            str(fl.get("error") or ""),
        )
        for fl in overlay.faults
    ]
    top, bottom = 8.0, 34.0
    plot_h = max(len(lanes), 1) * 20.0
    f = Frame(overlay.t0, overlay.t1, height=top + plot_h + bottom, top=top, bottom=bottom)
    desc = f"{title}. " + " ".join(
        f"{kind.capitalize()} {name}: {overlay.offset(s)} to {overlay.offset(e)}"
        f"{' (error: ' + err + ')' if err else ''}."
        for kind, name, s, e, err in lanes
    )
    parts = [_open(f, chart_id, title, desc), _hatch(chart_id), _x_axis(f, overlay)]
    for i, (kind, name, s, e, err) in enumerate(lanes):
        x0, x1 = f.x(s), max(f.x(e), f.x(s) + MIN_FAULT_W)
        y = f.top + i * 20.0 + 3
        fill = hatch_fill(chart_id, i - len(overlay.phases)) if kind == "fault" else "#e8eef5"
        text = (
            f"{name}{' — failed: ' + err if err else ''} ({overlay.offset(s)}–{overlay.offset(e)})"
        )
        parts.append(
            f'<rect class="{kind}-lane" x="{x0:.1f}" y="{y:.1f}" width="{x1 - x0:.1f}" '
            f'height="14" fill="{fill}" stroke="{"#7a2e00" if kind == "fault" else "#5b7a99"}">'
            f"<title>{escape(text)}</title></rect>"
        )
        width = scale.text_width(text, 11)
        if x1 + 4 + width <= f.width - 4:
            tx, anchor = x1 + 4, "start"
        else:
            tx, anchor = max(x0 - 4, f.left), "end"
        parts.append(
            f'<text class="lane-label" x="{tx:.1f}" y="{y + 11:.1f}" text-anchor="{anchor}">'
            f"{escape(text)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


# -- pieces ----------------------------------------------------------------------------------
def _open(f: Frame, chart_id: str, title: str, desc: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{chart_id}" class="chart" role="img" '
        f'viewBox="0 0 {f.width:g} {f.height:g}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'data-t0="{f.t0!r}" data-t1="{f.t1!r}" data-plot-left="{f.left:g}" '
        f'data-plot-width="{f.plot_w:g}" data-plot-top="{f.top:g}" data-plot-height="{f.plot_h:g}">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>'
    )


def _hatch(chart_id: str) -> str:
    """Two hatch patterns (45° and -45°): overlapping fault windows cross-hatch."""
    patterns = "".join(
        f'<pattern id="{chart_id}-{name}" patternUnits="userSpaceOnUse" width="7" height="7" '
        f'patternTransform="rotate({angle})"><rect width="7" height="7" fill="#fbe3d6"/>'
        '<line x1="0" y1="0" x2="0" y2="7" stroke="#c0501c" stroke-width="2.2"/></pattern>'
        for name, angle in (("hatch", 45), ("hatch-b", -45))
    )
    return f"<defs>{patterns}</defs>"


def hatch_fill(chart_id: str, index: int) -> str:
    """The fill of the index-th fault window: alternate hatches tell overlapping faults apart."""
    return f"url(#{chart_id}-{'hatch' if index % 2 == 0 else 'hatch-b'})"


def _y_axis(f: Frame, ticks: list[float], label: str, unit: str) -> str:
    out = [
        f'<rect class="plot" x="{f.left:g}" y="{f.top:g}" width="{f.plot_w:g}" '
        f'height="{f.plot_h:g}" fill="#fff" stroke="#999"/>'
    ]
    for v in ticks:
        y = f.y(v)
        out.append(
            f'<line class="grid" x1="{f.left:g}" x2="{f.plot_right:g}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="#e3e3e3"/>'
        )
        out.append(
            f'<text class="tick" x="{f.left - 5:g}" y="{y + 4:.1f}" text-anchor="end">'
            f"{scale.number_label(v)}{unit}</text>"
        )
    mid = f.top + f.plot_h / 2
    out.append(
        f'<text class="axis-label" transform="translate(14 {mid:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(label)}</text>'
    )
    return "\n".join(out)


def _x_axis(f: Frame, overlay: Overlay) -> str:
    out = []
    for t in scale.time_ticks(overlay.t0, overlay.t1):
        x = f.x(t)
        out.append(
            f'<line class="xtick" x1="{x:.1f}" x2="{x:.1f}" y1="{f.plot_bottom:g}" '
            f'y2="{f.plot_bottom + 4:g}" stroke="#666"/>'
        )
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{f.plot_bottom + 16:g}" '
            f'text-anchor="middle">{overlay.offset(t)}</text>'
        )
    return "\n".join(out)


def _fault_label(fault: dict) -> str:
    label = str(fault.get("label") or fault.get("action") or "fault")
    return f"{label} (failed)" if fault.get("error") else label


def _fault_label_rows(f: Frame, overlay: Overlay) -> list[int]:
    spans = [
        (f.x(fl["start"]), scale.text_width(_fault_label(fl), 10.5) + 4) for fl in overlay.faults
    ]
    return scale.stack_rows(spans)


def _fault_windows(f: Frame, overlay: Overlay, chart_id: str, rows: list[int]) -> str:
    out = []
    for i, (fault, row) in enumerate(zip(overlay.faults, rows, strict=True)):
        x0 = f.x(fault["start"])
        w = max(f.x(fault["end"]) - x0, MIN_FAULT_W)
        label = _fault_label(fault)
        when = f"{overlay.offset(fault['start'])} to {overlay.offset(fault['end'])}"
        out.append(
            f'<rect class="fault-window" x="{x0:.2f}" y="{f.top:g}" width="{w:.2f}" '
            f'height="{f.plot_h:g}" fill="{hatch_fill(chart_id, i)}" fill-opacity="0.75" '
            f'stroke="#c0501c" stroke-width="1" data-label="{escape(label)}" '
            f'data-start="{fault["start"]!r}" data-end="{fault["end"]!r}">'
            f"<title>fault: {escape(label)}, {when}</title></rect>"
        )
        y = 11 + row * ROW_H
        out.append(
            f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{y + 2:g}" y2="{f.top:g}" stroke="#c0501c"/>'
        )
        out.append(f'<text class="fault-label" x="{x0 + 3:.1f}" y="{y:g}">{escape(label)}</text>')
    return "\n".join(out)


def _phase_marks(f: Frame, overlay: Overlay) -> str:
    """Dotted lines at phase boundaries; names at phase starts, staggered when crowded."""
    starts: dict[float, list[str]] = {}
    bounds: set[float] = set()
    for name, s, e in overlay.phases:
        starts.setdefault(round(s, 1), []).append(name)
        bounds.update((round(s, 1), round(e, 1)))
    out = []
    for t in sorted(bounds):
        x = f.x(t)
        out.append(
            f'<line class="phase-boundary" x1="{x:.1f}" x2="{x:.1f}" y1="{f.top:g}" '
            f'y2="{f.plot_bottom:g}" stroke="#444" stroke-dasharray="1 3"/>'
        )
    labels = [(f.x(t), " / ".join(names)) for t, names in sorted(starts.items())]
    rows = scale.stack_rows([(x + 3, scale.text_width(text, 10)) for x, text in labels])
    for (x, text), row in zip(labels, rows, strict=True):
        out.append(
            f'<text class="phase-label" x="{x + 3:.1f}" y="{f.top + 12 + row * 12:g}">'
            f"{escape(text)}</text>"
        )
    return "\n".join(out)


def path_data(f: Frame, points: tuple[tuple[float, float | None], ...]) -> str:
    """SVG path commands; a None value ends the segment, a lone point becomes a dot."""
    out: list[str] = []
    segment: list[str] = []

    def flush() -> None:
        if len(segment) == 1:
            segment.append("h0.01")  # zero-length with round caps renders as a dot
        out.extend(segment)
        segment.clear()

    for t, v in points:
        if v is None:
            flush()
            continue
        segment.append(f"{'L' if segment else 'M'}{f.x(t):.1f} {f.y(v):.1f}")
    flush()
    return " ".join(out)


def _line(f: Frame, series: Series, style: Style) -> str:
    d = path_data(f, series.points)
    if not d:
        return ""
    dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
    return (
        f'<path class="series" data-series="{escape(series.name)}" d="{d}" fill="none" '
        f'stroke="{style.colour}" stroke-width="{style.width:g}"{dash} stroke-linecap="round" '
        f'stroke-linejoin="round"/>'
    )


def _direct_labels(f: Frame, lines: list[tuple[Series, Style]]) -> str:
    ends = []
    for series, style in lines:
        last = next((v for _, v in reversed(series.points) if v is not None), None)
        if last is not None:
            ends.append((f.y(last), series.label or series.name, style))
    ys = scale.spread([y for y, _, _ in ends], 12.0, f.top + 4, f.plot_bottom)
    max_chars = int((f.right - 12) / (10.5 * 0.58))
    out = []
    for y, (_, text, style) in zip(ys, ends, strict=True):
        short = scale.shorten(text, max_chars)
        out.append(
            f'<text class="direct-label" x="{f.plot_right + 6:g}" y="{y + 4:.1f}" '
            f'fill="{style.colour}">{escape(short)}</text>'
        )
    return "\n".join(out)


def _legend_layout(f: Frame, lines: list[tuple[Series, Style]]) -> list[tuple[int, float]]:
    """(row, x) of each legend entry, flowing left to right under the axis."""
    out, row, x = [], 0, f.left
    for series, _ in lines:
        w = 40 + scale.text_width(series.name, 11) + 18
        if x + w > f.width and x > f.left:
            row, x = row + 1, f.left
        out.append((row, x))
        x += w
    return out


def _legend(f: Frame, lines: list[tuple[Series, Style]], layout: list[tuple[int, float]]) -> str:
    out = []
    for (series, style), (row, x) in zip(lines, layout, strict=True):
        y = f.plot_bottom + 30 + row * ROW_H
        dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
        out.append(
            f'<line class="legend-swatch" x1="{x:.1f}" x2="{x + 34:.1f}" y1="{y - 4:g}" '
            f'y2="{y - 4:g}" stroke="{style.colour}" stroke-width="{style.width:g}"{dash}/>'
            f'<text class="legend" x="{x + 40:.1f}" y="{y:g}">{escape(series.name)}</text>'
        )
    return "\n".join(out)


def _describe(overlay: Overlay, title: str, lines: list[tuple[Series, Style]], y_label: str) -> str:
    start = dt.datetime.fromtimestamp(overlay.t0, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [f"{title}: {y_label} over time from {start} for {overlay.offset(overlay.t1)}."]
    for series, style in lines:
        values = series.values
        peak = f", peak {scale.number_label(max(values))}" if values else ", no data"
        parts.append(f"{series.name}: {style.name} line{peak}.")
    for fault in overlay.faults:
        parts.append(
            f"Hatched fault window {_fault_label(fault)}: "
            f"{overlay.offset(fault['start'])} to {overlay.offset(fault['end'])}."
        )
    for name, s, e in overlay.phases:
        parts.append(f"Phase {name}: {overlay.offset(s)} to {overlay.offset(e)}.")
    return " ".join(parts)
