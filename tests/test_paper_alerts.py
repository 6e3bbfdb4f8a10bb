"""Paper sessions that alert (issue 18, item 3): `PaperWatch` turns the journal into conditions after each
tick (halts by their source, the day's loss limit, a drawdown threshold, refusals in a row, stale data,
failed ticks), `workbench.alerts` delivers them to a local webhook, once each, with the command to act,
and one recovery once the condition has settled clear. A channel that hangs never holds up a tick. The
``alerts:`` section of a paper config names the settings that hold its URLs (they carry secrets)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from paper_helpers import build_lake, spec_for
from servers.loopback import guard_loopback
from servers.webhook import WebhookServer

from workbench.alerts import Alerter, AlertSettings
from workbench.backtest.engine import Costs
from workbench.errors import ConfigError
from workbench.paper.broker import OrderRequest, Side
from workbench.paper.feed import BarFeed
from workbench.paper.journal import Journal, TickStatus
from workbench.paper.risk import RiskLimits
from workbench.paper.runner import Runner, TickResult
from workbench.paper.service import load_config
from workbench.paper.sim import SimBroker
from workbench.paper.watch import PaperWatch, WatchSettings

pytestmark = [pytest.mark.network,
              pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")]

CONFIG = "pipelines/paper.yaml"


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    guard_loopback(monkeypatch)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _watch(journal: Journal, webhook: WebhookServer, clock: Clock, *, risk: RiskLimits | None = None,
           **settings: object) -> PaperWatch:
    alerts = AlertSettings(urls=(webhook.json_url(),), recover_after=60.0, retry_wait=0.01)
    alerter = Alerter(alerts, source="workbench paper test", clock=clock)
    spec = spec_for("sma_cross", {"fast": 5, "slow": 12})
    return PaperWatch(journal, [spec], alerter, settings=WatchSettings(alerts=alerts, **settings),  # type: ignore[arg-type]
                      risk=risk or RiskLimits(), config=CONFIG)


def _titles(webhook: WebhookServer) -> list[str]:
    return [b["title"] for b in webhook.bodies]


def test_a_halt_alerts_once_with_the_command_and_recovers_once_it_settles(
        tmp_path: Path, webhook: WebhookServer) -> None:
    clock = Clock()
    with Journal(tmp_path / "j.sqlite") as j:
        watch = _watch(j, webhook, clock)
        j.halt("sma_cross", "checking the venue", source="manual")
        for _ in range(5):  # the condition holds at every tick: one alert
            watch.check([])
            clock.now += 10
        # it flaps: resumed and halted again before it has been clear for recover_after
        for _ in range(4):
            j.resume("sma_cross", "ok")
            watch.check([])
            clock.now += 20
            j.halt("sma_cross", "checking again", source="manual")
            watch.check([])
        j.resume("sma_cross", "done")
        watch.check([])
        clock.now += 61
        watch.check([])  # settled clear: one recovery
        watch.check([])
        assert watch.alerter.flush(10)
    assert _titles(webhook) == ["[workbench paper test] ERROR: sma_cross halted by hand",
                                "[workbench paper test] RECOVERED: sma_cross halted by hand"]
    body = webhook.bodies[0]["message"]
    assert "reason: checking the venue" in body and "source: manual" in body
    act = (f"To act: find the cause (workbench paper status {CONFIG}), then workbench paper resume "
           f"{CONFIG} --strategy sma_cross --reason '...'")
    assert act in body


def test_refusals_in_a_row_and_stale_or_failed_ticks_alert_and_clear(tmp_path: Path,
                                                                     webhook: WebhookServer) -> None:
    clock = Clock()
    bar = pd.Timestamp("2025-03-01 10:00", tz="UTC")
    with Journal(tmp_path / "j.sqlite") as j:
        watch = _watch(j, webhook, clock, rejections=2)
        for k in range(2):
            req = OrderRequest(client_order_id=f"wb-test-{k}", symbol="BTC/USDT", side=Side.BUY, qty=1.0)
            j.record_intent("sma_cross", bar, "entry", req)
            j.mark_rejected(req.client_order_id, "insufficient balance")
            watch.check([TickResult("sma_cross", bar, TickStatus.DONE)])
        stale = TickResult("sma_cross", bar, TickStatus.STALE, message="no new bar for 3 expected bar(s)")
        watch.check([stale])
        watch.check([TickResult("sma_cross", bar, TickStatus.SKIPPED)])  # a skipped tick changes nothing
        failed = TickResult("sma_cross", bar, TickStatus.ERROR, message="alpaca unreachable")
        watch.check([failed])
        assert watch.alerter.flush(10)
        titles = _titles(webhook)
        assert titles == ["[workbench paper test] ERROR: 2 orders of sma_cross refused in a row",
                          "[workbench paper test] WARNING: stale data: sma_cross has no new bar",
                          "[workbench paper test] ERROR: tick failed: sma_cross"]
        assert "BTC/USDT entry: insufficient balance" in webhook.bodies[0]["message"]
        assert "error: alpaca unreachable" in webhook.bodies[2]["message"]
        # a good tick clears the tick conditions; the refusals clear once an order goes through
        watch.check([TickResult("sma_cross", bar, TickStatus.DONE)])
        clock.now += 61
        watch.check([TickResult("sma_cross", bar, TickStatus.DONE)])
        assert watch.alerter.flush(10)
        recovered = {t for t in _titles(webhook)[3:]}
        assert recovered == {"[workbench paper test] RECOVERED: stale data: sma_cross has no new bar",
                             "[workbench paper test] RECOVERED: tick failed: sma_cross"}


def test_the_kill_switch_alerts_from_a_replay_and_a_hung_channel_never_holds_a_tick(
        tmp_path: Path, webhook: WebhookServer) -> None:
    """A replay whose drawdown trips a warning threshold and then the kill switch, while the webhook
    hangs: every tick finishes (the post waits in the server meanwhile); once released, both alerts
    arrive."""
    lake = build_lake(tmp_path / "lake", symbols=("BTC/USDT",))
    spec = spec_for("sma_cross", {"fast": 5, "slow": 12}, direction="long",
                    costs=Costs(fees=0.01, slippage=0.0, slippage_vol=0.0))  # fees that lose money fast
    times = pd.date_range("2025-02-01", periods=240, freq="1h", tz="UTC")
    clock = {"now": times[0]}
    feed = BarFeed(spec.symbols, "1h", lake=lake)
    broker = SimBroker(feed=feed, costs=spec.costs, cash=spec.capital, clock=lambda: clock["now"])
    risk = RiskLimits(max_drawdown=0.05, max_bar_move=None, stale_bars=None)
    webhook.hold()  # every post now waits inside the server until released
    with Journal(tmp_path / "j.sqlite") as j:
        runner = Runner([spec], broker=broker, journal=j, feeds={spec.name: feed}, risk=risk,
                        follow_timeout=0.0)
        alerts = AlertSettings(urls=(webhook.json_url(query="rto=30"),), retry_wait=0.01)
        watch = PaperWatch(j, [spec], Alerter(alerts, source="workbench paper test"),
                           settings=WatchSettings(alerts=alerts, drawdown=0.02), risk=risk, config=CONFIG)
        done = 0
        for now in times:
            clock["now"] = now
            results = runner.tick(now)
            watch.check(results)
            done += sum(r.status == TickStatus.DONE for r in results)
        assert webhook.held.is_set()  # an alert was stuck in the channel the whole time
        assert done >= 200 and any(h["source"] == "kill_switch" for h in j.active_halts())
        webhook.release()
        assert watch.alerter.flush(20)
    titles = _titles(webhook)
    assert titles[0].startswith("[workbench paper test] WARNING: drawdown: sma_cross is ")
    assert "[workbench paper test] ERROR: kill switch: sma_cross is halted" in titles


def _config(tmp_path: Path, alerts: str) -> Path:
    path = tmp_path / "paper.yaml"
    path.write_text(textwrap.dedent("""\
        name: alerting
        strategies: [sma_cross]
        alerts:
        """) + textwrap.indent(textwrap.dedent(alerts), "  "))
    return path


def test_the_config_names_the_settings_that_hold_the_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          webhook: WebhookServer) -> None:
    monkeypatch.setenv("WB_TEST_ALERT_URL", webhook.json_url())
    cfg = load_config(_config(tmp_path, """\
        urls: ["${WB_TEST_ALERT_URL}"]
        recover_after: 2m
        drawdown: 0.1
        """))
    assert cfg.alerts is not None
    assert cfg.alerts.alerts.urls == (webhook.json_url(),) and cfg.alerts.alerts.recover_after == 120.0
    assert cfg.alerts.drawdown == 0.1 and cfg.alerts.rejections == 3


@pytest.mark.parametrize(("alerts", "env", "says"), [
    ('urls: ["json://user:pw@127.0.0.1/hook"]\n', None,
     "alert URLs hold tokens and passwords, so the config names the setting that holds each one"),
    ('urls: ["${WB_TEST_UNSET}"]\n', None, "alerts.urls names WB_TEST_UNSET, which is not set"),
    ('urls: ["${WB_TEST_ALERT_URL}"]\n', "nosuchscheme://tok-S3CRET@host",
     "is not a URL apprise can send to"),
    ('urls: ["${WB_TEST_ALERT_URL}"]\ndrawdown: 1.5\n', "json://127.0.0.1/hook", "alerts.drawdown=1.5"),
])
def test_bad_alert_settings_are_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        alerts: str, env: str | None, says: str) -> None:
    monkeypatch.delenv("WB_TEST_UNSET", raising=False)
    if env is not None:
        monkeypatch.setenv("WB_TEST_ALERT_URL", env)
    path = _config(tmp_path, alerts)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert says in msg and "\n" not in msg and "S3CRET" not in msg and "pw@" not in msg


def test_a_paper_run_alerts_a_halt_through_the_command_line(tmp_path: Path, webhook: WebhookServer) -> None:
    """`workbench paper run` with an ``alerts:`` section: nothing to say at first; a halt set by hand
    between two runs is alerted once, with the command to lift it."""
    from cli_runner import invoke
    from paper_helpers import write_artifact

    data = tmp_path / "data"
    build_lake(data, symbols=("BTC/USDT",))
    art = write_artifact(tmp_path / "fast.json", spec_for("sma_cross", {"fast": 5, "slow": 12}), name="fast")
    cfg = tmp_path / "paper.yaml"
    cfg.write_text(f"name: alerting\nstrategies: [{{artifact: {art}}}]\n"
                   "risk: {max_bar_move: 0.5, stale_bars: 1000}\n"
                   "schedule: {clock: {start: 2025-03-01, speed: 36000}}\ndata: {sync: false}\n"
                   "alerts: {urls: ['${WB_TEST_ALERT_URL}']}\n")
    env = {"WB_TEST_ALERT_URL": webhook.json_url()}
    first = invoke(["paper", "run", str(cfg), "--ticks", "3"], data=data, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    halted = invoke(["paper", "halt", str(cfg), "--reason", "venue maintenance"], data=data, cwd=tmp_path,
                    env=env)
    assert halted.returncode == 0, halted.stderr
    run = invoke(["paper", "run", str(cfg), "--ticks", "5"], data=data, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert webhook.wait_for(1)
    [body] = webhook.bodies
    assert body["title"] == "[workbench paper alerting] ERROR: all halted by hand"
    assert f"workbench paper resume {cfg} --reason '...'" in body["message"]
    assert webhook.json_url() not in run.stdout + run.stderr
