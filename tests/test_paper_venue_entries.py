"""Resting entries through the venues' own wire formats (issue 17, item 6): the runner sends `sma_pullback`'s
limit and stop entries through the unmodified alpaca-py and ccxt clients to the local Alpaca and Binance
fakes, which fill them as a continuous market crosses their level. The venues count no bars, so the runner
cancels each entry when its time in force has passed, and places its protective legs once it has filled.

Each bar is played to the fake as the backtest reads it: the tick after a bar's close sends the orders
(market orders fill at that price, the next bar's open), then the price walks the bar's range (low and high,
in the order of its body) to its close. The journal then equals the backtest trade for trade, and what the
venue holds equals the journal. Where the venue fills a resting order in pieces (the Binance fake's
`rest_fill`), the journal books each piece, and a stop that closes the position cancels the rest."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from paper_helpers import build_lake, registered, spec_for
from servers.alpaca import API_KEY, SECRET_KEY
from servers.alpaca_trading import AlpacaTradingFake
from servers.binance_trading import API_KEY as BINANCE_KEY
from servers.binance_trading import SECRET as BINANCE_SECRET
from servers.binance_trading import BinanceTradingServer
from servers.loopback import guard_loopback

from workbench.backtest.engine import Costs, Timeline, load_bars
from workbench.paper.alpaca import AlpacaBroker
from workbench.paper.ccxt import API_KEY_SETTING, SECRET_SETTING, CcxtBroker
from workbench.paper.feed import BarFeed
from workbench.paper.journal import Journal
from workbench.paper.replay import backtest_trades, compare_trades, journal_trades, parity_backtest
from workbench.paper.risk import RiskLimits
from workbench.paper.runner import Runner
from workbench.strategies.base import ParamSpace, Signals, Strategy, float_param, int_param
from workbench.strategies.registry import get_strategy

pytestmark = pytest.mark.network

LAKE_SYMBOL = "BTC/USDT"
START, END = "2025-02-20", "2025-03-20"


@pytest.fixture(autouse=True)
def _setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    guard_loopback(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for name in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "WORKBENCH_ALPACA_TRADING_URL",
                 "WORKBENCH_ALPACA_BASE_URL", "WORKBENCH_CCXT_BASE_URL", "BINANCE_API_KEY", "BINANCE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("WORKBENCH_ALPACA_CRYPTO_TAKER_FEE", "0")
    monkeypatch.setenv("WORKBENCH_ALPACA_CRYPTO_MAKER_FEE", "0")
    monkeypatch.setenv(API_KEY_SETTING, BINANCE_KEY)
    monkeypatch.setenv(SECRET_SETTING, BINANCE_SECRET)


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    lake = build_lake(tmp_path_factory.mktemp("venue_lake"), symbols=(LAKE_SYMBOL,),
                      start=pd.Timestamp("2025-02-10", tz="UTC"), end=pd.Timestamp(END, tz="UTC"))
    return load_bars(lake, [LAKE_SYMBOL], "1h", "2025-02-10", END)[LAKE_SYMBOL]


class Venue:
    """A fake venue and the broker that trades on it, with the price moves a bar makes."""

    def __init__(self, kind: str, symbol: str) -> None:
        self.kind, self.symbol = kind, symbol
        self.fake: Any
        self.broker: Any
        if kind == "alpaca":
            self.fake = AlpacaTradingFake(cash=100_000.0).__enter__()
            self.fake.crypto_fees = (Decimal(0), Decimal(0))
            self.broker = AlpacaBroker(base_url=self.fake.url, data_url=self.fake.url, timeout=2.0, retries=0,
                                       retry_wait=0.0)
        else:
            self.fake = BinanceTradingServer().__enter__()
            self.broker = CcxtBroker("binance", symbols=[symbol], base_url=self.fake.url, timeout=2.0,
                                     retries=0, retry_wait=0.0)
            self.broker.exchange.enableRateLimit = False

    def move(self, price: float, *, gap: bool = False) -> None:
        self.fake.set_price(self.symbol, price, gap=gap)

    def walk(self, bar: pd.Series) -> None:
        """A bar's range as the backtest reads it (low then high for a rising bar, else high then low),
        continuously, to its close."""
        path = ("low", "high") if bar["close"] >= bar["open"] else ("high", "low")
        for col in (*path, "close"):
            self.move(float(bar[col]))

    def close(self) -> None:
        self.broker.close()
        self.fake.__exit__(None, None, None)


def _trade_on(kind: str, tmp: Path, bars: pd.DataFrame, params: dict[str, Any],
              strategy: str = "sma_pullback", rest_fill: Decimal | None = None) -> tuple[Any, Journal, Venue]:
    """Run `strategy` with `params` through the runner on venue `kind`, bar by bar (module doc)."""
    symbol = "BTC/USD" if kind == "alpaca" else LAKE_SYMBOL
    venue = Venue(kind, symbol)
    if rest_fill is not None:
        venue.fake.rest_fill = rest_fill
    frames = {symbol: bars}
    index = Timeline(frames).index
    i0 = int(index.searchsorted(pd.Timestamp(START, tz="UTC")))
    spec = spec_for(strategy, params, symbols=(symbol,), direction="long", capital=50_000.0,
                    costs=Costs(fees=0.0, slippage=0.0, slippage_vol=0.0),
                    lots={symbol: venue.broker.lot(symbol)})
    spec = replace(spec, anchor=index[0])
    journal = Journal(tmp / f"{kind}.sqlite")
    feed = BarFeed((symbol,), "1h", frames=frames)
    runner = Runner([spec], broker=venue.broker, journal=journal, feeds={spec.name: feed},
                    risk=RiskLimits(max_bar_move=None, stale_bars=None), follow_timeout=2.0, poll=0.005)
    venue.move(float(bars["close"].iloc[i0]), gap=True)
    for k in range(i0 + 1, len(index)):
        runner.tick_one(spec, index[k])  # bar k-1 has closed; market orders fill at bar k's open
        venue.walk(bars.iloc[k])
    for row in journal.live_orders(spec.name):  # book what the last bar filled
        got = venue.broker.get_order(row["client_order_id"])
        if got is not None:
            runner._apply(spec, row, got)
    return parity_backtest(spec, frames, i0), journal, venue


@pytest.mark.parametrize(("kind", "order"), [("alpaca", "limit"), ("ccxt", "limit"), ("ccxt", "stop")])
def test_resting_entries_on_a_venue_equal_the_backtest_trade_for_trade(
        tmp_path: Path, bars: pd.DataFrame, kind: str, order: str) -> None:
    params = {"fast": 5, "slow": 20, "order": order, "offset": 0.003, "tif": 4}
    bt, journal, venue = _trade_on(kind, tmp_path, bars, params)
    try:
        name = "sma_pullback"
        trades = journal_trades(journal, name)
        # Binance ticks order prices to 0.01: a fill moves by up to half a tick, and so the equity a later
        # entry is sized on (by a lot step of 0.00001 at most)
        parity = compare_trades(trades, backtest_trades(bt), rtol=1e-6 if kind == "alpaca" else 1e-5)
        assert parity.ok, f"{parity.summary()}\n{parity.differences.to_string()}"
        assert len(trades) >= 4
        orders = journal.orders_frame(name)
        entries = orders[orders["leg"] == "entry"]
        assert set(entries["type"]) == {order}
        # the venue was sent resting orders with the strategy's prices; some filled, some rested out their
        # time in force and were cancelled by the runner (the venue counts no bars)
        assert (entries["status"] == "filled").any() and (entries["status"] == "canceled").any()
        expired = journal.decisions_frame(name).query("kind == 'order' and action == 'expired'")
        assert len(expired) == (entries["status"] == "canceled").sum() - len(
            journal.decisions_frame(name).query("kind == 'order' and action == 'cancelled'"))
        assert journal.errors_frame().empty, journal.errors_frame()["message"].tolist()
        # the account holds what the journal says
        book = journal.ledger(name, 50_000.0).positions
        held = {s: p.qty for s, p in venue.broker.positions().items()}
        assert {s: float(q) for s, q in book.items() if q} == pytest.approx(held)
    finally:
        journal.close()
        venue.close()


def _pullback_with_stop(df: pd.DataFrame, p: dict) -> Signals:
    """`sma_pullback`'s limit entries with a stop-loss of `sl`."""
    base = get_strategy("sma_pullback")
    params = base.params({"fast": 5, "slow": 20, "order": "limit", "offset": 0.003, "tif": 4})
    return replace(base.signals(df, params), stop_loss=p["sl"])


PULLBACK_SL = Strategy("pullback_sl", ParamSpace.of(float_param("sl", 0.02, 0.001, 0.5)), _pullback_with_stop,
                       warmup=lambda p: 20)


def _one_limit(df: pd.DataFrame, p: dict) -> Signals:
    """One long entry on bar 30: a buy limit at 99.5 resting 5 bars, a 1 % stop; no exit signal."""
    le = np.asarray(df.index == pd.Timestamp("2025-03-02 06:00", tz="UTC"))  # bar 30
    return Signals(le, np.zeros(len(df), dtype=bool), stop_loss=0.01, order_type="limit",
                   limit_price=np.where(le, 99.5, np.nan), time_in_force=5)


ONE_LIMIT = Strategy("one_limit_sl", ParamSpace.of(int_param("x", 1, 0, 2)), _one_limit, warmup=lambda p: 1)


def _runner(venue: Venue, strategy: str, params: dict[str, Any], bars: pd.DataFrame, journal: Journal,
            capital: float = 50_000.0) -> tuple[Runner, Any, pd.DatetimeIndex]:
    """A runner trading `strategy` long on the venue's symbol, without costs, with the venue's lots."""
    frames = {venue.symbol: bars}
    index = Timeline(frames).index
    spec = replace(spec_for(strategy, params, symbols=(venue.symbol,), direction="long", capital=capital,
                            costs=Costs(fees=0.0, slippage=0.0, slippage_vol=0.0),
                            lots={venue.symbol: venue.broker.lot(venue.symbol)}), anchor=index[0])
    runner = Runner([spec], broker=venue.broker, journal=journal,
                    feeds={spec.name: BarFeed((venue.symbol,), "1h", frames=frames)},
                    risk=RiskLimits(max_bar_move=None, stale_bars=None), follow_timeout=2.0, poll=0.005)
    return runner, spec, index


def test_a_filled_resting_entry_gets_its_protective_stop_at_the_venue(tmp_path: Path,
                                                                      bars: pd.DataFrame) -> None:
    """On a venue without legs that wait for a fill, the stop goes out at the tick after the fill, at its
    level from the fill price; an entry's time in force is journaled with it."""
    with registered(PULLBACK_SL):
        venue = Venue("ccxt", LAKE_SYMBOL)
        journal = Journal(tmp_path / "j.sqlite")
        runner, spec, index = _runner(venue, PULLBACK_SL.name, {"sl": 0.02}, bars, journal)
        try:
            i0 = int(index.searchsorted(pd.Timestamp(START, tz="UTC")))
            venue.move(float(bars["close"].iloc[i0]), gap=True)
            stops = 0
            for k in range(i0 + 1, len(index)):
                runner.tick_one(spec, index[k])
                orders = journal.orders_frame(spec.name)
                for _, sl in orders[orders["leg"] == "sl"].iterrows():
                    entry = journal.order(sl["oco_group"])
                    assert entry is not None and entry["type"] == "limit"
                    assert json.loads(entry["note"]) == {"stop_loss": 0.02, "time_in_force": 4}
                    fill = float(entry["avg_fill_price"])
                    assert float(sl["stop_price"]) == pytest.approx(fill * 0.98, rel=1e-6)
                    stops = max(stops, len(orders[orders["leg"] == "sl"]))
                venue.walk(bars.iloc[k])
                if stops >= 2:
                    break
            assert stops >= 2
        finally:
            journal.close()
            venue.close()


def test_partly_filled_resting_entries_are_booked_as_they_fill_and_protected(tmp_path: Path,
                                                                           bars: pd.DataFrame) -> None:
    """Binance fills a crossed limit a piece at a time here (`rest_fill`): the journal books each piece as
    it comes, an entry whose time in force ends part-filled keeps its pieces and is protected for them,
    and the account always holds what the journal says."""
    with registered(PULLBACK_SL):
        _, journal, venue = _trade_on("ccxt", tmp_path, bars, {"sl": 0.01}, strategy=PULLBACK_SL.name,
                                      rest_fill=Decimal("0.4"))
        try:
            name = PULLBACK_SL.name
            orders = journal.orders_frame(name).set_index("client_order_id")
            fills = journal.fills_frame(name)
            entries = orders[orders["leg"] == "entry"]
            pieces = fills[fills["client_order_id"].isin(entries.index)].groupby("client_order_id").size()
            assert (pieces > 1).any()  # filled in pieces, each booked
            filled = entries["filled_qty"].map(float)
            part = entries[(filled > 0) & (filled < entries["qty"].map(float) * (1 - 1e-9))]
            assert len(part) and set(part["status"]) <= {"canceled"}, part[["status", "filled_qty", "qty"]]
            # a part-filled entry's stop covers what it filled
            covered = orders[(orders["leg"] == "sl") & orders["oco_group"].isin(part.index)]
            assert len(covered)
            for _, sl in covered.iterrows():
                assert float(sl["qty"]) == pytest.approx(float(part.loc[sl["oco_group"], "filled_qty"]))
            assert journal.errors_frame().empty, journal.errors_frame()["message"].tolist()
            book = journal.ledger(name, 50_000.0).positions
            held = {s: p.qty for s, p in venue.broker.positions().items()}
            assert {s: float(q) for s, q in book.items() if q} == pytest.approx(held)
        finally:
            journal.close()
            venue.close()


def test_a_stop_hit_while_the_entry_still_rests_cancels_its_rest(tmp_path: Path) -> None:
    """A limit fills 40 % in one bar, 40 % more in the next as the price falls on through its stop; the
    runner (no stop rests at the venue before the entry is done) exits at the next tick and cancels the
    rest, so it cannot reopen the position unprotected."""
    index = pd.date_range("2025-03-01", periods=40, freq="1h", tz="UTC")
    price = np.full(40, 100.0)
    bars = pd.DataFrame({"open": price, "high": price, "low": price, "close": price,
                         "volume": np.full(40, 1_000.0)}, index=index)
    # each price move at or through the limit fills a fifth of it (rest_fill): bar 31 goes down to 99.4
    # and back up (two fifths), bar 32 falls through the limit and the stop (two more) and ends there
    bars.iloc[31, :4] = (100.0, 100.2, 99.4, 100.1)
    bars.iloc[32, :4] = (100.1, 100.1, 98.0, 98.2)
    bars.iloc[33:, :4] = 98.2
    with registered(ONE_LIMIT):
        venue = Venue("ccxt", LAKE_SYMBOL)
        venue.fake.rest_fill = Decimal("0.2")
        journal = Journal(tmp_path / "j.sqlite")
        runner, spec, _ = _runner(venue, ONE_LIMIT.name, {}, bars, journal, capital=1_000.0)
        try:
            venue.move(100.0, gap=True)
            for k in range(5, 40):
                runner.tick_one(spec, index[k])
                venue.walk(bars.iloc[k])
            entry = journal.orders_frame(spec.name).query("leg == 'entry'").iloc[0]
            assert entry["status"] == "canceled"
            assert float(entry["filled_qty"]) == pytest.approx(0.8 * float(entry["qty"]), rel=1e-3)
            reasons = journal.decisions_frame(spec.name)["reason"]
            assert reasons.str.contains("unfilled rest goes with it").sum() == 1
            assert journal.ledger(spec.name, 1_000.0).positions.get(LAKE_SYMBOL, 0) == 0
            assert venue.broker.positions() == {}
            assert journal.errors_frame().empty, journal.errors_frame()["message"].tolist()
        finally:
            journal.close()
            venue.close()
