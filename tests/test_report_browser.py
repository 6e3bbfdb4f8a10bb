"""A generated report in a real browser: offline, no errors, every plotly chart drawn and interactive.

Headless Chromium (Debian's ``chromium``, installed by ``.ci/ensure-chromium``) driven by playwright,
which never downloads a browser here. Every request that would leave the machine is aborted and
counted; Chromium's own resolver also maps every host but 127.0.0.1 to "not found".
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import nbformat
import pytest

from workbench.reports import ReportResult, run_report

pytestmark = pytest.mark.notebook

PLOTLY_MIME = "application/vnd.plotly.v1+json"
LOCAL_SCHEMES = {"file", "data", "about", "blob"}
REMOTE_LOAD = re.compile(r"""src\s*=\s*["']?(?:https?:)?//[^"'\s>]+|import\s*\(?\s*["']https?:[^"']+""")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--dns-prefetch-disable",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("WORKBENCH_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"{reason} (and WORKBENCH_REQUIRE_CHROMIUM=1)")
    pytest.skip(reason)


def _chromium() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(found, os.X_OK):
        _unavailable(
            "headless Chromium not found: install Debian's chromium (apt-get install chromium), "
            "as .ci/ensure-chromium does"
        )
    return found


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname == "127.0.0.1"


@pytest.fixture(scope="module")
def report(lake_root: Path, tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_DATA_DIR", str(lake_root))
        return run_report(
            "strategy_research",
            {"end": "2025-03-01", "grid": {"fast": [5, 10], "slow": [40, 60]}},
            out=tmp_path_factory.mktemp("browser") / "reports",
        )


def _figure_count(res: ReportResult) -> int:
    nb = nbformat.read(res.notebook, as_version=4)
    return sum(
        PLOTLY_MIME in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


def test_the_report_html_loads_nothing_from_the_network(report: ReportResult) -> None:
    html = report.html.read_text()
    assert report.ok and _figure_count(report) == 2  # the backtest figure and the sweep heatmap
    assert REMOTE_LOAD.findall(html) == []  # nbconvert's require.js/MathJax/mermaid, plotly's MathJax
    assert f"<title>strategy_research ({report.folder.name})</title>" in html
    assert "bars = load_bars(" not in html  # code still hidden


def test_the_report_renders_its_charts_offline_in_chromium(report: ReportResult) -> None:
    executable = _chromium()
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import Route, sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[dev]'")
    n = _figure_count(report)
    external: list[str] = []
    page_errors: list[str] = []
    console_errors: list[str] = []

    def note(url: str) -> None:
        if not _is_local(url) and url not in external:
            external.append(url)

    def block_remote(route: Route) -> None:
        note(route.request.url)
        if _is_local(route.request.url):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            context.route("**/*", block_remote)
            page = context.new_page()
            page.on("request", lambda r: note(r.url))  # also what routing cannot see
            page.on("websocket", lambda ws: note(ws.url))
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.goto(report.html.resolve().as_uri(), wait_until="load")
            try:
                page.wait_for_function(
                    "n => document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= n",
                    arg=n,
                    timeout=30_000,
                )
            except PlaywrightError:
                pytest.fail(
                    f"the report's {n} plotly charts did not render: page errors {page_errors}, "
                    f"console errors {console_errors}, blocked requests {external}"
                )
            charts = page.evaluate(
                """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => {
                    const svg = gd.querySelector('svg.main-svg').getBoundingClientRect();
                    return {width: svg.width, height: svg.height,
                            traces: gd.querySelectorAll('.scatterlayer .trace').length,
                            heatmaps: gd.querySelectorAll('.heatmaplayer .hm').length};
                })"""
            )
            assert len(charts) >= n, charts
            for chart in charts:
                assert chart["width"] > 100 and chart["height"] > 100, chart
                assert chart["traces"] + chart["heatmaps"] > 0, chart
            assert any(c["heatmaps"] for c in charts)  # the sweep heatmap drew its cells

            # a drag across the first chart zooms its x axis: plotly.js is live, not a static picture
            x_range = "() => document.querySelector('.js-plotly-plot')._fullLayout.xaxis.range.join(' to ')"
            before = page.evaluate(x_range)
            drag = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first
            drag.scroll_into_view_if_needed()
            box = drag.bounding_box()
            assert box is not None
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + box["width"] * 0.3, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=10)
            page.mouse.up()
            try:
                page.wait_for_function(f"b => ({x_range})() !== b", arg=before, timeout=10_000)
            except PlaywrightError:
                pytest.fail(f"dragging across the first chart did not zoom it: x axis stayed {before}")
        finally:
            browser.close()
    assert external == [], f"the report tried to reach the network: {external}"
    assert page_errors == []
    assert console_errors == []
