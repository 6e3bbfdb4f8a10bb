"""Resting entries through the venues' own wire formats (issue 17, item 6): the runner sends `sma_pullback`'s
limit and stop entries through the unmodified alpaca-py and ccxt clients to the local Alpaca and Binance
fakes, which fill them as a continuous market crosses their level. The venues count no bars, so the runner
cancels each entry when its time in force has passed, and places its protective legs once it has filled.

Each bar is played to the fake as the backtest reads it: the tick after a bar's close sends the orders
(market orders fill at that price, the next bar's open), then the price walks the bar's range (low and high,
in the order of its body) to its close. The journal then equals the backtest trade for trade, and what the
venue holds equals the journal."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from paper_helpers import build_lake, spec_for
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

    def close(self) -> None:
        self.broker.close()
        self.fake.__exit__(None, None, None)


def _trade_on(kind: str, tmp: Path, bars: pd.DataFrame, params: dict[str, Any]) -> tuple[Any, Journal, Venue]:
    """Run `sma_pullback` with `params` through the runner on venue `kind`, bar by bar (module doc)."""
    symbol = "BTC/USD" if kind == "alpaca" else LAKE_SYMBOL
    venue = Venue(kind, symbol)
    frames = {symbol: bars}
    index = Timeline(frames).index
    i0 = int(index.searchsorted(pd.Timestamp(START, tz="UTC")))
    spec = spec_for("sma_pullback", params, symbols=(symbol,), direction="long", capital=50_000.0,
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
        bar = bars.iloc[k]
        first, second = ("low", "high") if bar["close"] >= bar["open"] else ("high", "low")
        for col in (first, second, "close"):  # the bar's range, continuously, to its close
            venue.move(float(bar[col]))
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


def test_a_filled_resting_entry_gets_its_protective_stop_at_the_venue(tmp_path: Path,
                                                                      bars: pd.DataFrame) -> None:
    """On a venue without legs that wait for a fill, the stop goes out at the tick after the fill, at its
    level from the fill price; an entry's time in force is journaled with it."""
    from paper_helpers import registered

    from workbench.strategies.base import ParamSpace, Signals, Strategy, int_param
    from workbench.strategies.registry import get_strategy

    def _with_stop(df: pd.DataFrame, p: dict) -> Signals:
        base = get_strategy("sma_pullback")
        params = {"fast": 5, "slow": 20, "order": "limit", "offset": 0.003, "tif": 4}
        sig = base.signals(df, base.params(params))
        return replace(sig, stop_loss=0.02)

    strat = Strategy("pullback_sl", ParamSpace.of(int_param("x", 1, 0, 2)), _with_stop, warmup=lambda p: 20)
    with registered(strat):
        symbol = LAKE_SYMBOL
        venue = Venue("ccxt", symbol)
        frames = {symbol: bars}
        index = Timeline(frames).index
        i0 = int(index.searchsorted(pd.Timestamp(START, tz="UTC")))
        spec = replace(spec_for("pullback_sl", {}, symbols=(symbol,), direction="long", capital=50_000.0,
                                costs=Costs(fees=0.0, slippage=0.0, slippage_vol=0.0),
                                lots={symbol: venue.broker.lot(symbol)}), anchor=index[0])
        journal = Journal(tmp_path / "j.sqlite")
        runner = Runner([spec], broker=venue.broker, journal=journal,
                        feeds={spec.name: BarFeed((symbol,), "1h", frames=frames)},
                        risk=RiskLimits(max_bar_move=None, stale_bars=None), follow_timeout=2.0, poll=0.005)
        try:
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
                bar = bars.iloc[k]
                path = ("low", "high") if bar["close"] >= bar["open"] else ("high", "low")
                for col in (*path, "close"):
                    venue.move(float(bar[col]))
                if stops >= 2:
                    break
            assert stops >= 2
        finally:
            journal.close()
            venue.close()
