"""Render recorded runs' reports in headless Chromium: charts drawn, faults placed, nothing broken.

Uses Playwright's Python package driving the system Chromium (no browser download); without
Playwright it falls back to Chromium's own ``--screenshot`` and ``--dump-dom``. Skips only
when no Chromium binary exists. RECO_REPORT_SHOTS=DIR keeps the screenshots (docs/img).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import write_report

FIXTURES = Path(__file__).parent / "fixtures"
PASSING, FAILING, LOAD = "smoke-db-blip", "nc-consumer-ack-before-commit", "load-smoke"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1366, "height": 900}  # a common laptop screen


def _chromium() -> str | None:
    names = (os.environ.get("RECO_CHROMIUM"), "chromium", "chromium-browser", "google-chrome")
    return next((shutil.which(n) for n in names if n and shutil.which(n)), None)


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium binary (apt-get install chromium chromium-driver, or set RECO_CHROMIUM)",
)


@dataclass
class Rendered:
    """What the browser made of one report."""

    dom: str
    screenshot: Path
    problems: list[str] = field(default_factory=list)  # console errors, page errors, requests
    charts: list[dict] | None = None  # rendered geometry (Playwright only)
    lost_box_top: float | None = None


GEOMETRY_JS = """() => [...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  return {id: svg.id, left: box.left, width: box.width, vbw: svg.viewBox.baseVal.width,
    t0: +svg.dataset.t0, t1: +svg.dataset.t1, plotLeft: +svg.dataset.plotLeft,
    plotWidth: +svg.dataset.plotWidth,
    faults: [...svg.querySelectorAll('rect.fault-window')].map(r => {
      const b = r.getBoundingClientRect();
      return {left: b.left, width: b.width, label: r.dataset.label}; }),
    pathLengths: [...svg.querySelectorAll('path.series')].map(p => p.getTotalLength())};
})"""


@pytest.fixture(scope="module")
def browser():
    """A Playwright Chromium (the system binary), or None to use the CLI fallback."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        yield None
        return
    from playwright.sync_api import Error as PlaywrightError

    with sync_playwright() as p:
        try:
            instance = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:], headless=True)
        except PlaywrightError:  # a Chromium too old or new for this Playwright: use its CLI
            yield None
            return
        yield instance
        instance.close()


def _render(browser, html: Path, png: Path) -> Rendered:
    if browser is None:
        return _render_cli(html, png)
    page = browser.new_page(viewport=VIEWPORT)
    problems: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    url = html.as_uri()
    page.on("request", lambda r: r.url != url and problems.append(f"request: {r.url}"))
    page.goto(url, wait_until="load")
    page.screenshot(path=str(png))
    lost = page.query_selector(".lost-box")
    rendered = Rendered(
        dom=page.content(),
        screenshot=png,
        problems=problems,
        charts=page.evaluate(GEOMETRY_JS),
        lost_box_top=lost.bounding_box()["y"] if lost else None,
    )
    page.close()
    return rendered


def _render_cli(html: Path, png: Path) -> Rendered:
    """Chromium's own headless mode: a screenshot, the DOM, and console lines from its log."""
    profile = png.parent / f"profile-{png.stem}"
    base = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            f"--window-size={VIEWPORT['width']},{VIEWPORT['height']}"]  # fmt: skip
    shot = subprocess.run([*base, f"--screenshot={png}", html.as_uri()], capture_output=True,
                          text=True, timeout=90)  # fmt: skip
    dom = subprocess.run([*base, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=90)  # fmt: skip
    for step in (shot, dom):
        assert step.returncode == 0, f"{CHROMIUM} failed: {step.stderr[-2000:]}"
    problems = [line for line in (shot.stderr + dom.stderr).splitlines()
                if "CONSOLE" in line or "Refused to" in line]  # fmt: skip
    return Rendered(dom=dom.stdout, screenshot=png, problems=problems)


class Svgs(HTMLParser):
    """Chart SVGs in a DOM: their data attributes, fault rectangles and series paths."""

    def __init__(self, dom: str):
        super().__init__()
        self.charts: dict[str, dict] = {}
        self._current: dict | None = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "svg" and "chart" in a.get("class", ""):
            self._current = self.charts[a["id"]] = {"attrs": a, "faults": [], "paths": []}
        elif self._current is not None and tag == "rect" and a.get("class") == "fault-window":
            self._current["faults"].append(a)
        elif self._current is not None and tag == "path" and a.get("class") == "series":
            self._current["paths"].append(a["d"])

    def handle_endtag(self, tag):
        if tag == "svg":
            self._current = None


def _run_times(run: Path) -> tuple[float, float, list[dict]]:
    """The run's time axis computed from its files: first to last instant recorded."""
    phases = json.loads((run / "phases.json").read_text())
    faults = json.loads((run / "faults.json").read_text()) if (run / "faults.json").exists() else []
    starts = [start for start, _ in phases.values()] + [f["start"] for f in faults]
    ends = [end for _, end in phases.values()] + [f["end"] for f in faults]
    for name, span in (("timeline.jsonl", 1.0), ("pipeline.jsonl", 0.0)):
        if (run / name).exists():
            rows = [json.loads(x) for x in (run / name).read_text().splitlines() if x.strip()]
            # a timeline second spans [t, t + 1); its first rows may be empty (ramp-up)
            times = [r["t"] for r in rows if name != "timeline.jsonl" or r["endpoints"]]
            starts.append(min(times))
            ends.append(max(times) + span)
    return min(starts), max(ends), faults


@pytest.fixture(scope="module")
def rendered(browser, tmp_path_factory):
    """Each recorded run's report, rendered once."""
    out_dir = tmp_path_factory.mktemp("reports")
    keep = os.environ.get("RECO_REPORT_SHOTS")
    results = {}
    for name in (PASSING, FAILING, LOAD):
        html = write_report(FIXTURES / name, out_dir / f"{name}.html")
        results[name] = _render(browser, html, out_dir / f"{name}.png")
    if keep and browser is not None:  # the README's pictures: a failing top, passing charts
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(results[FAILING].screenshot, Path(keep) / "report-fail.png")
        page = browser.new_page(viewport=VIEWPORT)
        page.goto((out_dir / f"{PASSING}.html").as_uri())
        top = page.query_selector("#load").bounding_box()["y"]
        clip = {"x": 0, "y": top - 8, **VIEWPORT}
        page.screenshot(path=str(Path(keep) / "report-pass.png"), full_page=True, clip=clip)
        page.close()
    return results


@pytest.mark.parametrize("run", [PASSING, FAILING, LOAD])
def test_report_renders_cleanly_offline(rendered, run):
    result = rendered[run]
    assert result.problems == []  # no console error, no page error, no network request
    png = result.screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.parametrize("run", [PASSING, FAILING, LOAD])
def test_charts_drew_their_lines_on_the_runs_time_axis(rendered, run):
    charts = Svgs(rendered[run].dom).charts
    t0, t1, faults = _run_times(FIXTURES / run)
    expected = {"chart-rps", "chart-errors", "chart-latency-post-v1-events"}
    if (FIXTURES / run / "pipeline.jsonl").exists():
        expected |= {"chart-backlog", "chart-applied", "chart-apply-latency"}
    assert expected <= set(charts)
    for chart_id in expected:
        chart = charts[chart_id]
        assert float(chart["attrs"]["data-t0"]) == pytest.approx(t0, abs=1e-6)
        assert float(chart["attrs"]["data-t1"]) == pytest.approx(t1, abs=1e-6)
        assert chart["paths"] and all(d.startswith("M") and "L" in d for d in chart["paths"])
        left, width = (float(chart["attrs"][k]) for k in ("data-plot-left", "data-plot-width"))
        assert len(chart["faults"]) == len(faults)
        for fault, rect in zip(faults, chart["faults"], strict=True):
            x = left + (fault["start"] - t0) / (t1 - t0) * width
            assert float(rect["x"]) == pytest.approx(x, abs=0.01), fault["label"]
            assert rect["data-label"].startswith(fault["label"])


@pytest.mark.parametrize("run", [PASSING, FAILING])
def test_fault_windows_are_drawn_where_the_faults_happened(rendered, run):
    charts = rendered[run].charts
    if charts is None:
        pytest.skip("rendered geometry needs Playwright (pip install playwright)")
    t0, t1, faults = _run_times(FIXTURES / run)
    for chart in (c for c in charts if c["id"] != "chart-lanes"):
        scale = chart["width"] / chart["vbw"]  # viewBox units to CSS pixels
        assert chart["pathLengths"] and all(length > 0 for length in chart["pathLengths"])
        for fault, box in zip(faults, chart["faults"], strict=True):
            x = chart["left"] + (chart["plotLeft"] + (fault["start"] - t0) / (t1 - t0)
                                 * chart["plotWidth"]) * scale  # fmt: skip
            width = (fault["end"] - fault["start"]) / (t1 - t0) * chart["plotWidth"] * scale
            assert box["left"] == pytest.approx(x, abs=1.0), (chart["id"], fault["label"])
            assert box["width"] == pytest.approx(max(width, 2.0 * scale), abs=1.0)


def _banner(dom: str) -> str:
    return dom[dom.index("<header") : dom.index("<main")]


def test_failing_run_shows_lost_events_and_breaches_first(rendered):
    result = rendered[FAILING]
    audit = json.loads((FIXTURES / FAILING / "audit.json").read_text())
    verdict = json.loads((FIXTURES / FAILING / "verdict.json").read_text())
    banner = _banner(result.dom)
    assert "FAIL" in banner and "exit 3" in banner and "INVARIANT" in banner
    assert audit["lost"] and all(event_id in banner for event_id in audit["lost"])
    for breach in verdict["breaches"]:
        assert breach["message"] in banner
    if result.lost_box_top is not None:  # on screen without scrolling
        assert result.lost_box_top < VIEWPORT["height"]


def test_passing_run_says_pass_and_lists_no_breach(rendered):
    banner = _banner(rendered[PASSING].dom)
    assert "PASS" in banner and "exit 0" in banner and "Breached" not in banner
    assert "lost-box" not in banner
