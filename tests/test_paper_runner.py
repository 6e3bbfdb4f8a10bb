"""The runner's tick in process: the risk overlay, halts, breakers, reconciliation, unknown outcomes,
venues without one-cancels-other, status, metrics and config validation."""

from __future__ import annotations

import socket
import urllib.request
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from paper_helpers import BRACKETS, brackets_registered, build_lake, spec_for, write_artifact

from workbench.backtest.engine import Sizing, load_bars
from workbench.errors import BrokerUnavailable, ConfigError
from workbench.paper.broker import OrderRequest, OrderType, Side
from workbench.paper.feed import BarFeed
from workbench.paper.journal import Journal
from workbench.paper.replay import SimClock, journal_trades
from workbench.paper.risk import RiskLimits
from workbench.paper.runner import Runner, resting_legs
from workbench.paper.service import PaperSession, load_config, status
from workbench.paper.sim import SimBroker

NO_BREAKERS = {"max_bar_move": None, "stale_bars": None}


@pytest.fixture(autouse=True)
def _brackets():
    with brackets_registered():
        yield


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    end = pd.Timestamp("2025-04-01", tz="UTC")  # the tests tick in March: a lake up to April is enough
    lake = build_lake(tmp_path_factory.mktemp("runner_lake"), end=end)
    return load_bars(lake, ["BTC/USDT", "ETH/USDT"], "1h", None, end)


class Harness:
    """A runner over in-memory bars with the sim broker; `run(start, end)` ticks each bar close."""

    def __init__(self, tmp: Path, frames: dict, spec, risk: RiskLimits, broker_cls: type = SimBroker) -> None:
        self.frames = {s: frames[s] for s in spec.symbols}
        self.feed = BarFeed(spec.symbols, "1h", frames=self.frames)
        index = next(iter(self.frames.values())).index
        self.spec = replace(spec, anchor=index[0])
        self.clock = SimClock(index[0])
        self.broker = broker_cls(
            tmp / "b.sqlite",
            feed=self.feed,
            costs=spec.costs,
            fill=spec.fill,
            cash=spec.capital,
            clock=self.clock,
        )
        self.journal = Journal(tmp / "j.sqlite")
        self.runner = Runner(
            [self.spec],
            broker=self.broker,
            journal=self.journal,
            feeds={self.spec.name: self.feed},
            risk=risk,
            follow_timeout=0.0,
        )
        self.index = index

    def run(self, start: str, end: str) -> list:
        out = []
        for t in self.index[
            (self.index > pd.Timestamp(start, tz="UTC")) & (self.index <= pd.Timestamp(end, tz="UTC"))
        ]:
            self.clock.now = t
            out.append(self.runner.tick_one(self.spec, t))
        return out

    def decisions(self) -> pd.DataFrame:
        return self.journal.decisions_frame(self.spec.name)


def _fast(**kw):
    return spec_for("sma_cross", {"fast": 5, "slow": 12}, **kw)


def test_position_cap_reduces_entries_and_is_journaled(tmp_path: Path, frames) -> None:
    h = Harness(tmp_path, frames, _fast(), RiskLimits(max_position=0.3, **NO_BREAKERS))
    h.run("2025-03-01", "2025-03-05")
    d = h.decisions()
    reduced = d[(d["kind"] == "risk") & (d["action"] == "reduced")]
    assert len(reduced) >= 1 and reduced["reason"].str.contains("position cap 0.3").all()
    fills = h.journal.fills_frame(h.spec.name)
    entries = fills[fills["client_order_id"].str.endswith("-entry")]
    for _, f in entries.iterrows():
        assert float(f["qty"]) * float(f["price"]) <= 0.3 * 100_000 * 1.3  # equity moves a little


def test_gross_exposure_cap_refuses_the_second_symbol(tmp_path: Path, frames) -> None:
    spec = spec_for(
        BRACKETS.name,
        {"seed": 3},
        symbols=("BTC/USDT", "ETH/USDT"),
        sizing=Sizing(kind="fixed", fraction=0.6),
    )
    h = Harness(tmp_path, frames, spec, RiskLimits(max_gross=0.8, **NO_BREAKERS))
    h.run("2025-03-01", "2025-03-06")
    d = h.decisions()
    assert d["reason"].str.contains("gross exposure").any()
    snaps = h.journal.snapshots_frame(spec.name)
    assert len(snaps) > 100


def test_risk_per_trade_caps_by_stop_distance_and_refuses_without_stop(tmp_path: Path, frames) -> None:
    h = Harness(
        tmp_path / "a", frames, spec_for("donchian_breakout"), RiskLimits(risk_per_trade=0.002, **NO_BREAKERS)
    )
    h.run("2025-03-01", "2025-03-06")
    d = h.decisions()
    assert d["reason"].str.contains("risk per trade 0.002").any()
    g = Harness(tmp_path / "b", frames, _fast(), RiskLimits(risk_per_trade=0.01, **NO_BREAKERS))
    g.run("2025-03-01", "2025-03-05")
    refused = g.decisions().query("kind == 'risk' and action == 'refused'")
    assert len(refused) >= 1 and refused["reason"].str.contains("needs a stop").all()
    assert g.journal.fills_frame(g.spec.name).empty


def test_manual_halt_blocks_entries_but_not_exits(tmp_path: Path, frames) -> None:
    h = Harness(tmp_path, frames, _fast(), RiskLimits(**NO_BREAKERS))
    halted_at = None
    for t in h.index[
        (h.index > pd.Timestamp("2025-03-01", tz="UTC")) & (h.index <= pd.Timestamp("2025-03-10", tz="UTC"))
    ]:
        h.clock.now = t
        h.runner.tick_one(h.spec, t)
        if halted_at is None and h.journal.ledger(h.spec.name, h.spec.capital).positions:
            h.journal.halt("all", "operator went to lunch")
            halted_at = t
    assert halted_at is not None
    d = h.decisions()
    assert (d.query("kind == 'risk'")["reason"].str.contains("operator went to lunch")).any()
    trades = journal_trades(h.journal, h.spec.name)
    assert not (trades["entry_time"] > halted_at).any()
    assert (trades["exit_time"] > halted_at).any(), "exits still run while halted"
    assert h.journal.resume("all", "back") == 1
    h.run("2025-03-10", "2025-03-14")
    assert (journal_trades(h.journal, h.spec.name)["entry_time"] > pd.Timestamp("2025-03-10", tz="UTC")).any()


def test_drawdown_kill_switch_halts_the_strategy(tmp_path: Path, frames) -> None:
    h = Harness(tmp_path, frames, _fast(), RiskLimits(max_drawdown=0.002, **NO_BREAKERS))
    h.run("2025-03-01", "2025-03-20")
    halts = h.journal.active_halts()
    assert [x["source"] for x in halts] == ["kill_switch"]
    assert "drawdown" in halts[0]["reason"]
    d = h.decisions()
    kill_time = d.loc[d["action"] == "kill_switch", "time"].iloc[0]
    later = journal_trades(h.journal, h.spec.name)
    assert len(d[(d["action"] == "long") & (d["time"] > kill_time)]) == 0
    assert len(later) >= 1


def test_price_jump_trips_the_symbol_breaker(tmp_path: Path, frames) -> None:
    bad = {s: df.copy() for s, df in frames.items()}
    t = pd.Timestamp("2025-03-02 05:00", tz="UTC")
    bad["BTC/USDT"].loc[t, ["close", "high"]] = bad["BTC/USDT"].loc[t, "close"] * 1.6
    h = Harness(tmp_path, bad, _fast(), RiskLimits(max_bar_move=0.25, stale_bars=None))
    h.run("2025-03-01", "2025-03-04")
    halts = h.journal.active_halts()
    assert len(halts) == 1 and halts[0]["source"] == "breaker" and halts[0]["scope"] == "sma_cross:BTC/USDT"
    assert "price moved +6" in halts[0]["reason"] and "bound 25%" in halts[0]["reason"]


def test_stale_data_is_reported_and_nothing_is_traded(tmp_path: Path, frames) -> None:
    h = Harness(tmp_path, frames, _fast(), RiskLimits(max_bar_move=None, stale_bars=2))
    h.run("2025-03-01", "2025-03-02")
    last = h.index[-1]
    h.clock.now = last + pd.Timedelta("5h")
    h.runner.tick_one(h.spec, h.clock.now)  # the bar that closed last is handled
    h.clock.now = last + pd.Timedelta("9h")
    r = h.runner.tick_one(h.spec, h.clock.now)
    assert r.status == "stale" and "expected bar" in r.message
    assert (h.decisions()["action"] == "stale").any()


def test_a_position_changed_outside_the_runner_halts_the_symbol(tmp_path: Path, frames) -> None:
    h = Harness(tmp_path, frames, _fast(), RiskLimits(**NO_BREAKERS))
    h.clock.now = pd.Timestamp("2025-03-01", tz="UTC")
    h.broker.submit(
        OrderRequest(client_order_id="held-before-start", symbol="BTC/USDT", side=Side.BUY, qty=0.25)
    )
    h.run("2025-03-01", "2025-03-02")
    assert h.journal.active_halts() == []  # what the account held before the first tick is left alone
    assert (h.decisions()["action"] == "baseline").any()
    h.broker.submit(OrderRequest(client_order_id="manual-trade-1", symbol="BTC/USDT", side=Side.BUY, qty=0.5))
    h.run("2025-03-02", "2025-03-03")
    halts = h.journal.active_halts()
    assert [x["source"] for x in halts] == ["reconcile"]
    assert "broker reports" in halts[0]["reason"]


class _LostReplySim(SimBroker):
    """A venue that accepts the first market order and loses the reply (a test double of the broker)."""

    lost = 0

    def submit(self, request: OrderRequest):
        order = super().submit(request)
        if request.type is OrderType.MARKET and _LostReplySim.lost == 0:
            _LostReplySim.lost += 1
            raise BrokerUnavailable(f"order {request.client_order_id}: no reply; outcome unknown")
        return order


def test_unknown_outcome_is_settled_by_lookup_without_resubmitting(tmp_path: Path, frames) -> None:
    h = Harness(tmp_path, frames, _fast(), RiskLimits(**NO_BREAKERS), broker_cls=_LostReplySim)
    results = h.run("2025-03-01", "2025-03-06")
    assert any(r.status == "error" for r in results)
    orders = h.journal.orders_frame(h.spec.name)
    assert not orders["status"].isin(["unknown", "intent"]).any()
    assert h.broker.duplicate_submissions() == 0
    assert h.broker.created() == len(orders)
    assert h.journal.errors_frame()["message"].str.contains("outcome unknown").any()


class _NoOcoSim(SimBroker):
    """A venue like Alpaca or exchange spot: one resting protective order per position."""

    native_oco = False

    def submit(self, request: OrderRequest):
        if request.type is not OrderType.MARKET:
            resting = [o for o in self.open_orders(request.symbol) if o.type is not OrderType.MARKET]
            assert not resting, "a second protective order would be refused by such a venue"
        return super().submit(request)


def test_venue_without_oco_gets_one_stop_and_the_runner_watches_the_target(tmp_path: Path, frames) -> None:
    spec = spec_for(BRACKETS.name, {"seed": 3, "tp": 0.006, "sl": 0.02, "tsl": 0.05})
    h = Harness(tmp_path, frames, spec, RiskLimits(**NO_BREAKERS), broker_cls=_NoOcoSim)
    h.run("2025-03-01", "2025-03-15")
    orders = h.journal.orders_frame(spec.name)
    assert set(orders["leg"]) >= {"entry", "sl", "tpx"}
    assert "tsl" not in set(orders["leg"]) and "tp" not in set(orders["leg"])
    trades = journal_trades(h.journal, spec.name)
    assert "take_profit" in set(trades["exit_reason"])
    assert h.broker.duplicate_submissions() == 0
    assert resting_legs({"stop_loss": 0.1, "take_profit": 0.1}, native_oco=True) == ["sl", "tp"]
    assert resting_legs({"trailing_stop": 0.1, "take_profit": 0.1}, native_oco=False) == ["tsl"]


# ---------------------------------------------------------------- sessions from a config
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_session_ticks_serves_metrics_and_reports_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    lake = build_lake(data, symbols=("BTC/USDT",))
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(data))
    art = write_artifact(tmp_path / "a.json", _fast(), name="fast")
    port = _free_port()
    cfg = tmp_path / "paper.yaml"
    cfg.write_text(
        f"name: s1\nbroker: {{kind: sim}}\nstrategies: [{{artifact: {art}}}]\n"
        "schedule: {clock: {start: 2025-03-01, speed: 3600}}\ndata: {sync: false}\n"
        f"metrics: {{port: {port}}}\n"
    )
    wall = [1000.0]
    session = PaperSession(load_config(cfg), lake=lake, wall=lambda: wall[0])
    server = session.metrics.serve(port)
    try:
        orders = 0
        for _ in range(72):
            wall[0] += 1.0  # one simulated hour per tick
            orders += sum(len(r.orders) for r in session.tick())
        assert orders >= 2
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for name in (
            "workbench_paper_equity",
            "workbench_paper_pnl",
            "workbench_paper_orders_total",
            "workbench_paper_tick_latency_seconds_bucket",
            "workbench_paper_data_staleness_seconds",
        ):
            assert f'{name}{{artifact="fast@v1"' in body, name
        st = status(session.journal)
        row = st["strategies"][0]
        assert row["name"] == "fast@v1" and row["last_status"] == "done"
        assert st["fills"] >= 2 and st["halts"] == []
    finally:
        server.shutdown()
        session.close()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name: x\nbroker: {kind: simm}\nstrategies: [a]\n", "did you mean 'sim'"),
        ("name: x\nstrategies: []\n", "at least one strategy"),
        ("name: x\nstrategies: [a]\nrisk: {max_dd: 0.1}\n", "did you mean 'max_drawdown'"),
        ("name: x\nstrategies: [a]\nrisk: {daily_loss_limit: 2}\n", "below 1"),
        (
            "name: x\nstrategies: [a]\nbroker: {kind: alpaca, options: {api_key: k}}\n",
            "must not hold credentials",
        ),
        ("name: x\nstrategies: [a]\nschedule: {clock: {speed: 10}}\n", "needs a start"),
        ("name: x\nstrategies: [a]\nschedule: {delay: soon}\n", "not a duration"),
        ("name: x\nstrategies: [a]\nmetrics: {port: 99999}\n", "TCP port"),
        ("name: x\nstrategies: [a]\nschedul: {}\n", "did you mean 'schedule'"),
        ("name: x\nstrategies: [a\n", "not valid YAML"),
    ],
)
def test_bad_configs_say_what_to_fix(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_bars_missed_between_ticks_are_journaled_not_traded_late(tmp_path: Path, frames) -> None:
    h = Harness(tmp_path, frames, _fast(), RiskLimits(**NO_BREAKERS))
    h.run("2025-03-01", "2025-03-02")
    later = pd.Timestamp("2025-03-02 06:00", tz="UTC")
    h.clock.now = later
    h.runner.tick_one(h.spec, later)
    missed = h.decisions().query("action == 'missed'")
    assert len(missed) == 1 and "5 bar(s) closed since the last tick" in missed["reason"].iloc[0]


def test_daily_loss_limit_halts_new_entries(tmp_path: Path, frames) -> None:
    h = Harness(tmp_path, frames, _fast(), RiskLimits(daily_loss_limit=0.001, **NO_BREAKERS))
    h.run("2025-03-01", "2025-03-20")
    assert h.journal.active_halts() == []  # not a kill switch: it lasts for the day
    refused = h.decisions().query("kind == 'risk' and action == 'refused'")
    assert refused["reason"].str.contains("until the next UTC day").any()
    days = pd.to_datetime(refused["bar"]).dt.normalize().unique()
    entries = journal_trades(h.journal, h.spec.name)["entry_time"].dt.normalize().unique()
    assert len(days) >= 1 and len(entries) >= 3


@pytest.mark.parametrize(
    ("calendar", "tf", "now", "expected"),
    [
        ("24/7", "1h", "2025-03-03 10:20", ["2025-03-03 11:00:02", "2025-03-03 12:00:02"]),
        ("24/7", "1m", "2025-03-03 10:20:01", ["2025-03-03 10:20:02", "2025-03-03 10:21:02"]),
        # NYSE, UTC-aligned hourly buckets: Friday's last closes at 21:00 UTC (16:00 New York);
        # then nothing until Monday's first (13:00 bucket, the session opens 13:30 UTC after DST)
        ("XNYS", "1h", "2025-03-07 20:30", ["2025-03-07 21:00:02", "2025-03-10 14:00:02"]),
    ],
)
def test_the_schedule_fires_after_each_bar_close_of_the_calendar(calendar, tf, now, expected) -> None:
    from workbench.data.calendar import Calendar
    from workbench.data.timeframe import Timeframe
    from workbench.paper.service import bar_close_trigger

    trig = bar_close_trigger(Calendar(calendar), Timeframe.parse(tf), 2.0)
    first = trig.get_next_fire_time(None, pd.Timestamp(now, tz="UTC").to_pydatetime())
    second = trig.get_next_fire_time(first, first)
    assert [pd.Timestamp(first), pd.Timestamp(second)] == [pd.Timestamp(e, tz="UTC") for e in expected]


class _NoStopsSim(_NoOcoSim):
    """A venue that refuses stop orders (like Alpaca for crypto): the runner must watch the stop itself."""

    def submit(self, request: OrderRequest):
        if request.type is OrderType.STOP:
            from workbench.errors import OrderRejected

            raise OrderRejected("stop orders are not supported for this asset")
        return super().submit(request)


def test_a_refused_stop_is_watched_by_the_runner(tmp_path: Path, frames) -> None:
    spec = spec_for(BRACKETS.name, {"seed": 3, "tp": 0.3, "sl": 0.004, "tsl": 0.4})
    h = Harness(tmp_path, frames, spec, RiskLimits(**NO_BREAKERS), broker_cls=_NoStopsSim)
    h.run("2025-03-01", "2025-03-15")
    orders = h.journal.orders_frame(spec.name)
    assert (orders.query("leg == 'sl'")["status"] == "rejected").all() and (orders["leg"] == "sl").any()
    trades = journal_trades(h.journal, spec.name)
    assert "stop_loss" in set(trades["exit_reason"])
    assert (orders["leg"] == "slx").any()
