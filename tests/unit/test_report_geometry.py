"""SVG geometry of the report's charts: scales, ticks, paths, fault windows, label layout."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from harness.report import scale
from harness.report.charts import PALETTE, Overlay, lanes_chart, line_chart, path_data
from harness.report.scale import Frame
from harness.report.series import Series

T0 = 1_800_000_000.0


class Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self, text: str):
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, {k: v or "" for k, v in attrs}))

    def all(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.found if t == tag and (cls is None or cls in a.get("class", ""))]


def test_frame_maps_time_and_values_linearly_inside_the_plot():
    f = Frame(T0, T0 + 100, 0, 50, width=1000, left=100, right=100, height=300, top=50, bottom=50)
    assert f.plot_w == 800 and f.plot_h == 200
    assert f.x(T0) == 100 and f.x(T0 + 100) == 900 and f.x(T0 + 25) == pytest.approx(300)
    assert f.y(0) == 250 and f.y(50) == 50 and f.y(25) == pytest.approx(150)
    assert f.x(T0 - 10) == 100 and f.x(T0 + 500) == 900  # clamped to the plot
    assert f.y(-5) == 250 and f.y(80) == 50


def test_log_frame_puts_decades_at_equal_steps_and_zero_on_the_floor():
    f = Frame(T0, T0 + 1, 1, 1000, log=True, height=300, top=0, bottom=0)
    assert f.y(1) == 300 and f.y(1000) == 0
    assert f.y(10) == pytest.approx(200) and f.y(100) == pytest.approx(100)
    assert f.y(0) == 300


@pytest.mark.parametrize(
    ("span", "step"), [(10, 2), (7, 2), (100, 20), (0.3, 0.1), (1234, 500), (0, 1)]
)
def test_nice_step_is_one_two_five(span, step):
    assert scale.nice_step(span) == pytest.approx(step)


def test_nice_max_and_linear_ticks_are_round():
    assert (
        scale.nice_max(13) == 15
        and scale.nice_max(9) == 10
        and scale.nice_max(0) == 1
        and scale.nice_max(0, 5) == 5
    )
    assert scale.nice_max(100) == 100
    assert scale.linear_ticks(0, 15) == [0, 5, 10, 15]
    assert scale.linear_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_log_bounds_cover_the_values_by_decades():
    assert scale.log_bounds([3.0, 250.0]) == (1.0, 1000.0)
    assert scale.log_bounds([0.4, 12.0]) == (0.1, 100.0)
    assert scale.log_bounds([]) == (1.0, 10.0)
    assert scale.log_ticks(1.0, 1000.0) == [1, 10, 100, 1000]


def test_time_ticks_step_at_round_offsets_and_label_them():
    ticks = scale.time_ticks(T0, T0 + 26)
    assert [t - T0 for t in ticks] == [0, 5, 10, 15, 20, 25]
    assert len(scale.time_ticks(T0, T0 + 600)) <= 11
    assert scale.offset_label(45) == "45 s"
    assert scale.offset_label(150) == "2:30"
    assert scale.offset_label(3900) == "1:05:00"


def test_number_labels_are_compact():
    assert [scale.number_label(v) for v in (0, 0.2, 1.5, 20, 1000, 15000, 2e6)] == [
        "0",
        "0.2",
        "1.5",
        "20",
        "1k",
        "15k",
        "2M",
    ]


def test_path_breaks_at_missing_values_and_dots_lone_points():
    f = Frame(T0, T0 + 4, 0, 10, width=400, left=0, right=0, height=100, top=0, bottom=0)
    d = path_data(f, ((T0, 0), (T0 + 1, 10), (T0 + 2, None), (T0 + 3, 5), (T0 + 4, None)))
    assert d == "M0.0 100.0 L100.0 0.0 M300.0 50.0 h0.01"
    assert path_data(f, ((T0, None),)) == ""


def test_stack_rows_and_spread_keep_labels_apart():
    assert scale.stack_rows([(0, 50), (20, 50), (60, 10), (200, 10)]) == [0, 1, 0, 0]
    ys = scale.spread([100, 101, 102], gap=12, lo=0, hi=200)
    assert sorted(ys) == [100, 112, 124]
    ys = scale.spread([198, 199], gap=12, lo=0, hi=200)
    assert max(ys) <= 200 and abs(ys[0] - ys[1]) >= 12


def test_shorten_keeps_the_method_and_the_end_of_the_path():
    assert scale.shorten("POST /v1/events", 25) == "POST /v1/events"
    assert scale.shorten("GET /v1/users/[id]/recommendations", 25) == "GET …/recommendations"
    assert scale.shorten("a very long label without a path", 10) == "…ut a path"


def _chart(faults=(), phases=(), lines=None, **kw) -> tuple[str, Elements]:
    ov = Overlay(T0, T0 + 100, tuple(faults), tuple(phases))
    lines = lines or [
        (Series("rps", tuple((T0 + i + 0.5, float(i)) for i in range(100))), PALETTE[0])
    ]
    svg = line_chart(ov, "c1", "Requests per second", lines, "requests/s", **kw)
    return svg, Elements(svg)


def test_fault_windows_sit_at_their_times_with_a_hatch_and_a_label():
    faults = [
        {"label": "api_postgres down", "action": "down", "start": T0 + 20, "end": T0 + 35},
        {
            "label": "poison",
            "action": "poison",
            "start": T0 + 50,
            "end": T0 + 50.01,
            "error": "boom",
        },
    ]
    svg, el = _chart(faults)
    root = el.all("svg")[0]
    left, width = float(root["data-plot-left"]), float(root["data-plot-width"])
    rects = el.all("rect", "fault-window")
    assert len(rects) == 2
    assert float(rects[0]["x"]) == pytest.approx(left + 0.20 * width, abs=0.01)
    assert float(rects[0]["width"]) == pytest.approx(0.15 * width, abs=0.02)
    assert rects[0]["fill"] == "url(#c1-hatch)"
    assert float(rects[1]["width"]) >= 2.0  # a sub-second fault stays visible
    assert rects[1]["fill"] == "url(#c1-hatch-b)"  # the next window hatches the other way
    assert 'id="c1-hatch"' in svg and "api_postgres down" in svg
    assert "poison (failed)" in svg  # a fault whose action errored says so


def test_chart_is_accessible_and_names_every_line_and_window():
    faults = [{"label": "db down", "action": "down", "start": T0 + 10, "end": T0 + 20}]
    svg, el = _chart(faults, phases=[("baseline", T0, T0 + 10), ("fault", T0 + 10, T0 + 20)])
    root = el.all("svg")[0]
    assert root["role"] == "img" and root["aria-labelledby"] == "c1-title c1-desc"
    desc = re.search(r"<desc id=\"c1-desc\">(.*?)</desc>", svg).group(1)
    assert "rps: solid line" in desc and "db down" in desc and "Phase baseline" in desc
    assert len(el.all("line", "phase-boundary")) == 3  # 0, 10 and 20 s
    assert [a["data-series"] for a in el.all("path", "series")] == ["rps"]
    assert "direct-label" in svg and "legend-swatch" in svg


def test_lines_differ_by_dash_pattern_not_only_colour():
    lines = [(Series(f"s{i}", ((T0 + 1, 1.0), (T0 + 2, 2.0))), PALETTE[i]) for i in range(4)]
    _, el = _chart(lines=lines)
    dashes = [a.get("stroke-dasharray", "") for a in el.all("path", "series")]
    assert len(set(dashes)) == 4


def test_percent_axis_tops_at_100_and_log_axis_spans_decades():
    spike = [(Series("err", ((T0 + 1, 0.0), (T0 + 2, 100.0))), PALETTE[0])]
    svg, _ = _chart(lines=spike, percent=True)
    assert ">100%</text>" in svg and ">120%" not in svg
    lat = [(Series("p99", ((T0 + 1, 3.0), (T0 + 2, 420.0))), PALETTE[0])]
    svg, _ = _chart(lines=lat, log=True)
    assert all(f">{v}</text>" in svg for v in ("1", "10", "100", "1k"))


def test_lanes_chart_draws_one_lane_per_phase_and_fault():
    ov = Overlay(
        T0,
        T0 + 60,
        ({"label": "kill consumer", "start": T0 + 5, "end": T0 + 9},),
        (("baseline", T0, T0 + 5), ("recovery", T0 + 9, T0 + 60)),
    )
    el = Elements(lanes_chart(ov, "lanes", "Phases"))
    assert len(el.all("rect", "phase-lane")) == 2 and len(el.all("rect", "fault-lane")) == 1
