"""The simulated broker under the shared broker contract, plus what only it promises: backtest fills."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from broker_contract import BrokerContract

from workbench.backtest.engine import Costs
from workbench.errors import OrderRejected
from workbench.paper.broker import OrderRequest, OrderStatus, OrderType, Side, client_order_id
from workbench.paper.feed import BarFeed
from workbench.paper.replay import SimClock
from workbench.paper.sim import SimBroker


class _SimHarness:
    symbol = "BTC/USDT"
    price0 = 100.0
    qty = 2.0

    def __init__(self, path: Path) -> None:
        self.broker = SimBroker(path, costs=Costs(fees=0.0, slippage=0.0), cash=100_000.0)
        self.broker.set_price(self.symbol, self.price0)

    def set_price(self, symbol: str, price: float) -> None:
        self.broker.set_price(symbol, price)

    def fill_mode(self, mode: str) -> None:
        self.broker.fill_mode = mode

    def complete_fills(self) -> None:
        self.broker.fill_mode = "full"
        self.broker.complete_fills()

    def fault(self, kind: str, times: int = 1) -> bool:
        return False

    def created(self) -> int:
        return self.broker.created()


class TestSimContract(BrokerContract):
    @pytest.fixture
    def harness(self, tmp_path: Path):
        h = _SimHarness(tmp_path / "sim.sqlite")
        yield h
        h.broker.close()


# ---------------------------------------------------------------- bar-driven fills
def _bars(rows: list[tuple[float, float, float, float]], start: str = "2025-01-01") -> pd.DataFrame:
    idx = pd.date_range(start, periods=len(rows), freq="1h", tz="UTC", name="ts")
    o, h, lo, c = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    return pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": 1.0}, index=idx)


def _broker(tmp_path: Path, bars: pd.DataFrame, fill: str = "next_open", **costs: float):
    feed = BarFeed(["X"], "1h", frames={"X": bars})
    clock = SimClock(bars.index[1])
    b = SimBroker(
        tmp_path / "b.sqlite",
        feed=feed,
        costs=Costs(**{"fees": 0.0, "slippage": 0.0, **costs}),
        fill=fill,
        cash=10_000.0,
        clock=clock,
    )
    return b, clock


def _cid(leg: str, n: int = 0) -> str:
    return client_order_id("t", "X", f"2025-01-01T{n:02d}:00:00+00:00", leg)


def test_market_order_fills_at_the_open_of_the_bar_starting_now_with_costs(tmp_path: Path) -> None:
    bars = _bars([(100, 101, 99, 100), (102, 103, 101, 102), (104, 105, 103, 104)])
    b, _clock = _broker(tmp_path, bars, fees=0.001, slippage=0.01)
    o = b.submit(OrderRequest(client_order_id=_cid("entry"), symbol="X", side=Side.BUY, qty=10))
    assert o.status is OrderStatus.FILLED
    assert o.avg_fill_price == pytest.approx(102 * 1.01)
    assert o.fee == pytest.approx(10 * 102 * 1.01 * 0.001)
    assert b.account().cash == pytest.approx(10_000 - 10 * 102 * 1.01 * 1.001)
    assert o.extra["bar"] == bars.index[1].isoformat()


def test_close_fill_uses_the_last_closed_bar(tmp_path: Path) -> None:
    bars = _bars([(100, 101, 99, 100.5), (102, 103, 101, 102.5), (104, 105, 103, 104)])
    b, _clock = _broker(tmp_path, bars, fill="close")
    o = b.submit(OrderRequest(client_order_id=_cid("entry"), symbol="X", side=Side.BUY, qty=1))
    assert o.avg_fill_price == pytest.approx(100.5)
    assert o.extra["bar"] == bars.index[0].isoformat()


def test_stop_gap_at_open_fills_at_the_open_and_cancels_its_oco_siblings(tmp_path: Path) -> None:
    bars = _bars([(100, 101, 99, 100), (100, 101, 99, 100), (100, 101, 99.5, 100), (90, 95, 85, 92)])
    b, clock = _broker(tmp_path, bars)
    b.submit(OrderRequest(client_order_id=_cid("entry"), symbol="X", side=Side.BUY, qty=1))
    entry = _cid("entry")
    b.submit(
        OrderRequest(
            client_order_id=_cid("sl"),
            symbol="X",
            side=Side.SELL,
            qty=1,
            type=OrderType.STOP,
            stop_price=95.0,
            oco_group=entry,
        )
    )
    b.submit(
        OrderRequest(
            client_order_id=_cid("tp"),
            symbol="X",
            side=Side.SELL,
            qty=1,
            type=OrderType.LIMIT,
            limit_price=110.0,
            oco_group=entry,
        )
    )
    clock.now = bars.index[2]
    assert b.get_order(_cid("sl")).status is OrderStatus.NEW  # bar 1 never went below 99
    clock.now = bars.index[3]
    sl = b.get_order(_cid("sl"))
    assert sl.status is OrderStatus.FILLED and sl.avg_fill_price == 90.0
    assert sl.extra == {"bar": bars.index[3].isoformat(), "reason": "stop_loss"}
    assert b.get_order(_cid("tp")).status is OrderStatus.CANCELED
    assert b.positions() == {}


def test_intrabar_stop_is_assumed_before_the_target_and_trailing_moves_after(tmp_path: Path) -> None:
    bars = _bars([(100, 100, 100, 100), (100, 100, 100, 100), (100, 112, 94, 100), (100, 100, 100, 100)])
    b, clock = _broker(tmp_path, bars)
    entry = _cid("entry")
    b.submit(OrderRequest(client_order_id=entry, symbol="X", side=Side.BUY, qty=1))
    b.submit(
        OrderRequest(
            client_order_id=_cid("sl"),
            symbol="X",
            side=Side.SELL,
            qty=1,
            type=OrderType.STOP,
            stop_price=95.0,
            oco_group=entry,
        )
    )
    b.submit(
        OrderRequest(
            client_order_id=_cid("tp"),
            symbol="X",
            side=Side.SELL,
            qty=1,
            type=OrderType.LIMIT,
            limit_price=110.0,
            oco_group=entry,
        )
    )
    clock.now = bars.index[3]
    assert b.get_order(_cid("sl")).avg_fill_price == 95.0
    assert b.get_order(_cid("tp")).status is OrderStatus.CANCELED


def test_trailing_stop_follows_highs_from_the_entry(tmp_path: Path) -> None:
    bars = _bars([(100, 100, 100, 100), (100, 100, 100, 100), (100, 120, 99, 118), (118, 119, 107, 110)])
    b, clock = _broker(tmp_path, bars)
    entry = _cid("entry")
    b.submit(OrderRequest(client_order_id=entry, symbol="X", side=Side.BUY, qty=1))
    b.submit(
        OrderRequest(
            client_order_id=_cid("tsl"),
            symbol="X",
            side=Side.SELL,
            qty=1,
            type=OrderType.TRAILING_STOP,
            trail_percent=0.1,
            ref_price=100.0,
            oco_group=entry,
        )
    )
    clock.now = bars.index[3]  # bar 1's high 100: no hit; bar 2 low 99 > 90: ref -> 120
    assert b.get_order(_cid("tsl")).status is OrderStatus.NEW
    clock.now = bars.index[3] + pd.Timedelta("1h")  # bar 3: low 107 <= 108
    tsl = b.get_order(_cid("tsl"))
    assert tsl.status is OrderStatus.FILLED and tsl.avg_fill_price == pytest.approx(108.0)
    assert tsl.extra["reason"] == "trailing_stop"


def test_state_survives_reopening(tmp_path: Path) -> None:
    bars = _bars([(100, 101, 99, 100), (102, 103, 101, 102), (104, 105, 103, 104)])
    b, _clock = _broker(tmp_path, bars)
    b.submit(OrderRequest(client_order_id=_cid("entry"), symbol="X", side=Side.BUY, qty=3))
    cash = b.account().cash
    b.close()
    again, _ = _broker(tmp_path, bars)
    assert again.positions()["X"].qty == 3
    assert again.account().cash == cash
    assert again.get_order(_cid("entry")).status is OrderStatus.FILLED
    again.submit(OrderRequest(client_order_id=_cid("entry"), symbol="X", side=Side.BUY, qty=3))
    assert again.created() == 1 and again.duplicate_submissions() == 1


def test_protective_order_needs_a_position_and_shorts_can_be_refused(tmp_path: Path) -> None:
    bars = _bars([(100, 101, 99, 100), (102, 103, 101, 102)])
    b, _ = _broker(tmp_path, bars)
    with pytest.raises(OrderRejected, match="must reduce an open"):
        b.submit(
            OrderRequest(
                client_order_id=_cid("sl"),
                symbol="X",
                side=Side.SELL,
                qty=1,
                type=OrderType.STOP,
                stop_price=90,
            )
        )
    b.allow_short = False
    with pytest.raises(OrderRejected, match="short selling"):
        b.submit(OrderRequest(client_order_id=_cid("entry"), symbol="X", side=Side.SELL, qty=1))
    with pytest.raises(OrderRejected, match="no price"):
        b.submit(OrderRequest(client_order_id=_cid("entry", 1), symbol="Y", side=Side.BUY, qty=1))
