"""The monitoring dashboard in a real browser, over the journal of a paper runner that keeps ticking.

A `DashboardServer` serves the dashboard of a journal written by the paper runner (sim broker, the test
lake); headless Chromium (Debian's, as in test_report_browser; playwright never downloads one) opens it
with every request not to 127.0.0.1 aborted. The Live page shows the journal's equity and follows the
runner without a reload; a halt clicked on the Controls page is journaled (source "dashboard", the
client's address) and the runner's next entries are refused; a phone-width page does not scroll
sideways; without the token nothing of the journal is shown and the controls are refused, by the page
and by the server. Screenshots (desktop 1280x900, phone 375x800, Live and Controls) are written to
reports/screenshots/.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pandas as pd
import pytest
from cli_runner import WB, _settings, invoke
from paper_helpers import BRACKETS, build_lake, registered, spec_for, write_artifact

from workbench.dashboard import Access, Dashboard, DashboardServer, is_loopback
from workbench.dashboard.controls import ControlsPage
from workbench.errors import ConfigError
from workbench.paper.feed import BarFeed
from workbench.paper.journal import Journal
from workbench.paper.live import LiveView
from workbench.paper.risk import RiskLimits
from workbench.paper.runner import Runner
from workbench.paper.sim import SimBroker

pytestmark = pytest.mark.network  # a loopback server (the dashboard) and a browser talking to it

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "reports" / "screenshots"
TOKEN = "dashboard-test-token-0123456789abcdef"
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
WAIT_MS = 20_000  # a refresh comes every 2 s; this leaves room on a loaded 2-core machine
# every text and attribute value of the page, shadow roots included (Panel draws inside them)
ALL_TEXT = """() => {
  const out = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      for (const a of el.attributes) out.push(a.value);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
    out.push(root.textContent || '');
  };
  walk(document);
  return out.join('\\n');
}"""


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
    return parts.scheme in ("data", "about", "blob") or parts.hostname == "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- fixtures
class Paper:
    """The paper runner trading the bracket test strategy on BTC and ETH, one 1h bar per `tick`."""

    def __init__(self, lake: Any, folder: Path) -> None:
        self.spec = spec_for(BRACKETS.name, {"seed": 5}, symbols=("BTC/USDT", "ETH/USDT"))
        self.times = iter(pd.date_range("2025-02-01", periods=2000, freq="1h", tz="UTC"))
        self.clock = {"now": pd.Timestamp("2025-02-01", tz="UTC")}
        feed = BarFeed(self.spec.symbols, "1h", lake=lake)
        broker = SimBroker(feed=feed, costs=self.spec.costs, cash=self.spec.capital,
                           clock=lambda: self.clock["now"])
        self.journal = Journal(folder / "journal.sqlite")
        self.runner = Runner([self.spec], broker=broker, journal=self.journal, feeds={self.spec.name: feed},
                             risk=RiskLimits(max_bar_move=None, stale_bars=None, max_drawdown=0.9,
                                             daily_loss_limit=0.5), follow_timeout=0.0)

    @property
    def name(self) -> str:
        return self.spec.name

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock["now"] = now = next(self.times)
            self.runner.tick(now)

    def tick_until(self, done: Any, limit: int = 300) -> int:
        """Tick until `done()` holds (at most `limit` bars); returns how many bars it took."""
        for k in range(1, limit + 1):
            self.tick()
            if done():
                return k
        pytest.fail(f"nothing of the kind happened in {limit} bars")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_lake(tmp_path_factory.mktemp("dashboard_lake"), start=pd.Timestamp("2025-01-01", tz="UTC"),
                      end=pd.Timestamp("2025-04-01", tz="UTC"))


@pytest.fixture
def paper(lake: Any, tmp_path: Path) -> Iterator[Paper]:
    with registered(BRACKETS):
        run = Paper(lake, tmp_path)
        run.tick(300)
        yield run
        run.journal.close()


@contextmanager
def served(journal: Path, access: Access | None = None, lake: Any = None) -> Iterator[str]:
    server = DashboardServer(journal, port=0, access=access or Access(), lake=lake)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium through playwright (which never downloads one), closed on leaving."""
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


class Tab:
    """One page in its own browser context, with what it tried to reach and every error it reported."""

    def __init__(self, browser: Any, url: str, width: int, height: int) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.external: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self._note(r.url))
        self.page.on("websocket", lambda ws: self._note(ws.url))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.goto(url, wait_until="load")

    def _note(self, url: str) -> None:
        if not _is_local(url) and url not in self.external:
            self.external.append(url)

    def _route(self, route: Any) -> None:
        self._note(route.request.url)
        if _is_local(route.request.url):
            route.continue_()
        else:
            route.abort()

    def tab(self, name: str) -> None:
        self.page.locator(".bk-tab", has_text=name).first.click()

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_timeout(500)  # let plotly finish drawing
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def scroll_width(self) -> int:
        return int(self.page.evaluate("document.documentElement.scrollWidth"))

    def clean(self) -> None:
        assert self.external == [], f"the dashboard tried to reach the network: {self.external}"
        assert self.errors == [], f"the browser reported errors: {self.errors}"

    def close(self) -> None:
        self.context.close()


@contextmanager
def tab(browser: Any, url: str, width: int = 1280, height: int = 900) -> Iterator[Tab]:
    t = Tab(browser, url, width, height)
    try:
        yield t
    finally:
        t.close()


def _equity(t: Tab) -> tuple[float, str]:
    el = t.page.locator(".wb-equity").first
    el.wait_for(timeout=WAIT_MS)
    return float(el.get_attribute("data-value") or "nan"), el.inner_text()


# ---------------------------------------------------------------------------------------------- the tests
def test_the_live_page_shows_the_journal_and_follows_the_runner_without_a_reload(
        paper: Paper, browser: Any) -> None:
    from playwright.sync_api import expect

    with served(paper.journal.path) as url, tab(browser, url) as t:
        value, text = _equity(t)
        last = paper.journal.last_equity(paper.name)
        assert last is not None and value == pytest.approx(last, abs=1e-9) and text == f"{last:,.2f}"
        t.page.locator(".wb-fills .tabulator-row").first.wait_for(timeout=WAIT_MS)
        t.shot("live-desktop")
        t.page.evaluate("window.__same_page = 42")

        before = len(paper.journal.fills_frame())
        paper.tick_until(lambda: len(paper.journal.fills_frame()) > before + 2)
        newest = paper.journal.fills_frame()["fill_id"].iloc[-1]
        expect(t.page.locator(".wb-fills .tabulator-row").first).to_contain_text(newest, timeout=WAIT_MS)
        last = paper.journal.last_equity(paper.name)
        assert last is not None
        expect(t.page.locator(".wb-equity").first).to_have_text(f"{last:,.2f}", timeout=WAIT_MS)
        assert t.page.evaluate("window.__same_page") == 42  # updated in place: no reload happened
        assert t.page.locator(".wb-card").count() == 1
        t.clean()


def test_at_phone_width_nothing_scrolls_sideways(paper: Paper, browser: Any) -> None:
    with served(paper.journal.path) as url, tab(browser, url, 375, 800) as t:
        _equity(t)
        t.page.locator(".wb-fills .tabulator-row").first.wait_for(timeout=WAIT_MS)
        assert t.scroll_width() <= 375
        t.shot("live-phone")
        t.tab("Controls")
        t.page.locator(".wb-halt button").wait_for(timeout=WAIT_MS)
        assert t.scroll_width() <= 375
        t.shot("controls-phone")
        t.tab("Research")
        t.page.locator(".wb-research").first.wait_for(timeout=WAIT_MS)
        assert t.scroll_width() <= 375
        t.clean()


def test_a_halt_from_the_controls_is_journaled_and_the_next_entries_are_refused(
        paper: Paper, browser: Any) -> None:
    from playwright.sync_api import expect

    with served(paper.journal.path) as url, tab(browser, url) as t:
        _equity(t)
        t.tab("Controls")
        page = t.page
        page.locator(".wb-strategy select").select_option(paper.name)
        page.locator(".wb-halt button").click()  # no reason: refused, nothing journaled
        expect(page.locator(".wb-result")).to_have_attribute("data-ok", "false", timeout=WAIT_MS)
        expect(page.locator(".wb-result")).to_contain_text("needs a written reason")
        assert paper.journal.active_halts() == []

        page.locator(".wb-reason input").fill("checking the feed")
        page.locator(".wb-halt button").click()
        expect(page.locator(".wb-result")).to_have_attribute("data-ok", "true", timeout=WAIT_MS)
        [h] = paper.journal.active_halts()
        assert h["scope"] == paper.name and h["source"] == "dashboard"
        assert h["reason"] == "checking the feed (from 127.0.0.1)"
        expect(page.locator(".wb-control-halts .tabulator-row").first).to_contain_text(
            "checking the feed", timeout=WAIT_MS)  # the page re-read the journal at once
        t.shot("controls-desktop")

        # the runner's next entry signal is refused for the halt, and the Live page shows the halt
        seen = len(paper.journal.decisions_frame())

        def refused() -> bool:
            d = paper.journal.decisions_frame().iloc[seen:]
            return bool(((d["kind"] == "risk") & (d["action"] == "refused")).any())

        paper.tick_until(refused)
        d = paper.journal.decisions_frame().iloc[seen:]
        refusals = d[(d["kind"] == "risk") & (d["action"] == "refused")]
        assert refusals["reason"].str.contains("halted (dashboard): checking the feed", regex=False).all()
        assert not d["action"].isin(["long", "short"]).any()  # no entry went through after the halt
        t.tab("Live")
        expect(page.locator(".wb-halted").first).to_be_visible(timeout=WAIT_MS)
        expect(page.locator(".wb-decisions .tabulator-row").first).to_contain_text("refused", timeout=WAIT_MS)

        # resume it, then halt one symbol only
        t.tab("Controls")
        page.locator(".wb-reason input").fill("feed is fine")
        page.locator(".wb-resume button").click()
        expect(page.locator(".wb-result")).to_contain_text("lifted 1 halt(s)", timeout=WAIT_MS)
        assert paper.journal.active_halts() == []
        cleared = paper.journal.db.execute("SELECT cleared_reason FROM halts WHERE id=?",
                                           (h["id"],)).fetchone()
        assert cleared == ("feed is fine (dashboard, from 127.0.0.1)",)
        page.locator(".wb-symbol select").select_option("ETH/USDT")
        page.locator(".wb-reason input").fill("ETH venue maintenance")
        page.locator(".wb-halt button").click()
        expect(page.locator(".wb-result")).to_contain_text(f"halted {paper.name}:ETH/USDT", timeout=WAIT_MS)
        [h] = paper.journal.active_halts()
        assert (h["scope"], h["source"]) == (f"{paper.name}:ETH/USDT", "dashboard")
        t.clean()


def test_without_the_token_the_journal_is_withheld_and_the_controls_are_refused(
        paper: Paper, browser: Any, caplog: pytest.LogCaptureFixture) -> None:
    from playwright.sync_api import expect

    caplog.set_level(logging.DEBUG)
    access = Access(token=TOKEN)
    with served(paper.journal.path, access) as url:
        for address in (url, f"{url}?token=not-the-token-at-all-00000"):
            with tab(browser, address) as t:
                t.page.locator(".wb-token-needed").first.wait_for(timeout=WAIT_MS)
                assert t.page.locator(".wb-equity").count() == 0
                assert "a token is needed" in t.page.evaluate(ALL_TEXT)
                t.tab("Controls")
                halt = t.page.locator(".wb-halt button")
                expect(halt).to_be_disabled(timeout=WAIT_MS)
                # a click forced past the disabled button (the model re-enabled from the page) still
                # reaches a server that refuses it
                t.page.evaluate("""() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
                    if ((m.css_classes || []).includes('wb-halt')) m.disabled = false; }""")
                expect(halt).to_be_enabled(timeout=WAIT_MS)
                halt.click()
                expect(t.page.locator(".wb-result")).to_contain_text("refused: a token is needed",
                                                                     timeout=WAIT_MS)
                assert paper.journal.active_halts() == []
                t.clean()
        with tab(browser, f"{url}?token={TOKEN}") as t:
            value, _ = _equity(t)
            assert value == pytest.approx(paper.journal.last_equity(paper.name))
            t.tab("Controls")
            expect(t.page.locator(".wb-halt button")).to_be_enabled(timeout=WAIT_MS)
            assert TOKEN not in t.page.evaluate(ALL_TEXT).replace(f"token={TOKEN}", "")
            t.clean()
    assert TOKEN not in caplog.text  # the web server's request log masks it
    assert "token=***" in caplog.text


def test_the_controls_refuse_a_page_without_the_token_on_the_server_side(paper: Paper) -> None:
    page = ControlsPage(paper.journal.path, allowed=False, origin="198.51.100.7")
    page.reason.value = "no token"
    assert page.halt_button.disabled and page.resume_button.disabled
    assert page.act("halt") is False and page.act("resume") is False
    assert paper.journal.active_halts() == []
    assert "refused: a token is needed" in page.message.object


def test_a_journal_that_cannot_be_read_is_one_line_on_the_page_and_the_next_refresh_retries(
        paper: Paper) -> None:
    board = Dashboard(paper.journal.path, refresh=0.5)
    assert board.view is not None
    good = board.view
    board.view = LiveView(paper.journal.path)
    board.view.db.close()  # as if the file went away under it
    board.refresh()
    assert "could not read the journal" in board.status.object and "retrying" in board.status.object
    assert "Traceback" not in board.status.object and "\n" not in board.status.object
    board.view = good
    paper.tick(3)
    board.refresh()
    assert "wb-updated" in board.status.object
    card = board.live.cards[paper.name]
    assert f"{paper.journal.last_equity(paper.name):,.2f}" in card.stats.object
    board.close()


def test_binding_beyond_loopback_needs_a_token(paper: Paper, monkeypatch: pytest.MonkeyPatch) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        assert not is_loopback(host)
    with pytest.raises(ConfigError, match=r"--host 0\.0\.0\.0 serves the dashboard beyond this machine") as e:
        DashboardServer(paper.journal.path, host="0.0.0.0", access=Access())
    assert "\n" not in str(e.value)
    Access(token=TOKEN).check_bind("0.0.0.0")  # with a token it may

    monkeypatch.delenv("WORKBENCH_DASHBOARD_TOKEN", raising=False)
    r = invoke(["dashboard", str(paper.journal.path), "--host", "0.0.0.0"])
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().startswith("error: --host 0.0.0.0 serves the dashboard beyond this machine")
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_token_comes_from_a_named_variable_and_is_never_echoed(paper: Paper) -> None:
    j = str(paper.journal.path)
    cases = [
        (["--token-env", "NO_SUCH_DASHBOARD_TOKEN"], {"NO_SUCH_DASHBOARD_TOKEN": None},
         "$NO_SUCH_DASHBOARD_TOKEN is not set"),
        (["--token-env", "SHORT_TOKEN"], {"SHORT_TOKEN": "abc"}, "shorter than 16 characters"),
        (["--token-env", "s3cr3t-pasted/by=mistake"], {}, "takes the NAME of an environment variable"),
    ]
    for args, env, match in cases:
        r = invoke(["dashboard", j, *args], env=env)
        assert r.returncode == 1 and match in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert "s3cr3t" not in r.stderr


def test_a_port_in_use_is_one_line(paper: Paper) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = invoke(["dashboard", str(paper.journal.path), "--port", str(port)])
    assert r.returncode == 1
    assert r.stderr.strip().startswith(f"error: port {port} is in use: choose --port")
    assert len(r.stderr.strip().splitlines()) == 1
    r = invoke(["dashboard", str(paper.journal.path.parent / "nothing-here")])
    assert r.returncode == 1 and "error: no journal at" in r.stderr


def test_the_command_serves_until_sigterm_and_never_logs_the_token(paper: Paper, tmp_path: Path) -> None:
    """The command group's one real process: `workbench -v dashboard` serves the page, logs requests
    with the token masked, and stops cleanly on SIGTERM."""
    port = _free_port()
    env = {**os.environ, **_settings(tmp_path / "data", {"WORKBENCH_DASHBOARD_TOKEN": TOKEN})}
    proc = subprocess.Popen([*WB, "-v", "dashboard", str(paper.journal.path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in env.items() if v is not None})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        said = f"on http://127.0.0.1:{port}/ (open it with ?token=<the value of $WORKBENCH_DASHBOARD_TOKEN>)"
        assert said in line, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?token={TOKEN}", timeout=60) as resp:
            page = resp.read().decode()
        assert resp.status == 200 and "<title>workbench dashboard</title>" in page
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert TOKEN not in line + out + err
    assert re.search(r"GET /\?token=\*\*\*", err), err  # the request was logged, masked


@pytest.mark.notebook
def test_view_renders_inline_in_a_notebook(paper: Paper, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"from workbench.dashboard import view\nview({str(paper.journal.path)!r})")])
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env_path) if p)
    try:
        NotebookClient(nb, timeout=240, kernel_name="python3").execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    outputs = nb.cells[0].outputs
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "application/vnd.holoviews_exec.v0+json" in mimes, mimes  # Panel's live, comm-backed view
    rendered = json.dumps([o.get("data", {}) for o in outputs])
    last = paper.journal.last_equity(paper.name)
    assert last is not None and f"{last:,.2f}" in rendered  # the journal's equity, in the rendered model


def test_the_config_form_drafts_a_paper_config_from_the_registry(
        paper: Paper, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect

    from workbench.paper.service import load_config

    data = tmp_path / "research_data"
    write_artifact(data / "registry" / "fast" / "v1.json", spec_for("sma_cross", {"fast": 5, "slow": 12}),
                   name="fast")
    (data / "registry" / "fast" / "CURRENT").write_text("1")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(data))
    with served(paper.journal.path) as url, tab(browser, url) as t:
        _equity(t)
        t.tab("Controls")
        page = t.page
        choices = page.locator(".wb-draft-artifacts input").first
        choices.click()
        choices.fill("fast")
        choices.press("Enter")
        page.locator(".wb-draft-name input").fill("from_browser")
        page.locator(".wb-draft-build button").click()
        expect(page.locator(".wb-draft-result")).to_have_attribute("data-ok", "true", timeout=WAIT_MS)
        expect(page.locator(".wb-draft-yaml")).to_contain_text("- artifact: fast\n")
        page.locator(".wb-draft-save button").click()
        expect(page.locator(".wb-draft-result")).to_contain_text("saved ", timeout=WAIT_MS)
        saved = data / "paper" / "configs" / "from_browser.yaml"
        assert [e.artifact for e in load_config(saved).strategies] == ["fast"]
        expect(page.locator(".wb-draft-save button")).to_be_disabled()  # saved once: build again first
        page.locator(".wb-draft-build button").click()
        expect(page.locator(".wb-draft-save button")).to_be_enabled(timeout=WAIT_MS)
        page.locator(".wb-draft-save button").click()
        expect(page.locator(".wb-draft-result")).to_contain_text("exists; choose another name",
                                                                 timeout=WAIT_MS)
        t.shot("controls-config-desktop")
        t.clean()


def test_the_live_page_shows_the_risk_overlay_freshness_drift_and_collector_streams(
        paper: Paper, lake: Any, browser: Any) -> None:
    import time

    from playwright.sync_api import expect

    from workbench.paper.replay import drift

    wall = time.time()
    status = {"source": "binance", "symbols": ["BTC/USDT"], "streams": ["trades"], "pid": 1,
              "started": wall - 100, "connected": True, "sessions": 3, "reconnects": 2, "last_error": "",
              "messages": {"trades": 5000}, "last_message": wall - 1.0, "backfilled": 0, "duplicates": 0,
              "gaps": 1, "overflows": 0, "refills_pending": 0, "durable_p99_ms": 3.2, "updated": wall}
    status_file = lake.ticks.wal_dir("binance") / "status.json"
    status_file.parent.mkdir(parents=True, exist_ok=True)
    status_file.write_text(json.dumps(status))
    try:
        with served(paper.journal.path, lake=lake) as url, tab(browser, url) as t:
            _equity(t)
            page = t.page
            # the collector stream: stopped (no writer holds its log), 5,000 messages over its 100 s
            row = page.locator(".wb-streams .tabulator-row").first
            expect(row).to_contain_text("binance", timeout=WAIT_MS)
            for text in ("trades", "stopped", "50.0", "2", "1"):
                expect(row).to_contain_text(text)
            # the risk overlay: the limits in force and where the strategy stands, as the runner computes it
            snaps = paper.journal.snapshots_frame(paper.name)
            equity = snaps["equity"].astype(float)
            dd = 1.0 - equity.iloc[-1] / max(equity.max(), paper.spec.capital)
            risk = page.locator(".wb-risk .tabulator-row", has_text="max_drawdown").first
            expect(risk).to_contain_text("90.00%", timeout=WAIT_MS)
            expect(risk).to_contain_text(f"{dd:.2%}")
            daily = page.locator(".wb-risk .tabulator-row", has_text="daily_loss_limit").first
            expect(daily).to_contain_text("50.00%")
            expect(page.locator(".wb-staleness").first).to_contain_text("last tick")
            # the shadow backtest, on request: its parity line equals the drift report's, its curve is drawn
            page.locator(".wb-shadow button").first.click()
            result = page.locator(".wb-drift-result").first
            expect(result).to_be_visible(timeout=WAIT_MS)
            parity = drift(paper.journal, paper.spec, lake)
            assert result.get_attribute("data-matched") == str(parity.matched)
            assert result.get_attribute("data-ok") == str(parity.ok).lower()
            expect(result).to_contain_text(parity.summary())
            for _ in range(WAIT_MS // 250):  # the chart redrawn with the shadow curve (its legend names it)
                if "shadow backtest" in page.evaluate(ALL_TEXT):
                    break
                page.wait_for_timeout(250)
            assert "shadow backtest" in page.evaluate(ALL_TEXT)
            t.shot("live-drift-desktop")
            t.clean()
    finally:
        status_file.unlink(missing_ok=True)
