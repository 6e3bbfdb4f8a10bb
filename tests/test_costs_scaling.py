"""Costs that scale (SEMANTICS.md "Prices, costs, cash"): borrow fees for shorts, each bar their value at
the last close times the annual rate over the bars per year; the square-root market impact of a fill.
Hand-computed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.backtest.engine import Costs, Sizing, simulate
from workbench.errors import ConfigError
from workbench.strategies import Signals


def flat(n: int = 6, price: float = 100.0) -> pd.DataFrame:
    index = pd.date_range("2025-01-01", periods=n, freq="1D", tz="UTC", name="ts")
    return pd.DataFrame({"open": price, "high": price, "low": price, "close": price, "volume": 1.0},
                        index=index)


def test_a_short_pays_its_value_times_the_rate_per_bar() -> None:
    bars = flat()
    short = np.zeros(len(bars), dtype=bool)
    short[0] = True  # sold at bar 1's open: 1,000 shares of 100 for the 100,000
    res = simulate(bars, Signals(np.zeros(len(bars), dtype=bool), short_entries=short),
                   costs=Costs(fees=0.0, slippage=0.0, borrow_rate=0.365), sizing=Sizing(fraction=1.0),
                   periods_per_year=365)
    # 1,000 x 100 x 0.365 / 365 = 100 a bar, from the bar after the sale
    assert res.equity.tolist() == [100_000.0, 100_000.0, 99_900.0, 99_800.0, 99_700.0, 99_600.0]
    free = simulate(bars, Signals(np.zeros(len(bars), dtype=bool), short_entries=short),
                    costs=Costs(fees=0.0, slippage=0.0), sizing=Sizing(fraction=1.0), periods_per_year=365)
    assert free.equity.tolist() == [100_000.0] * 6


def test_a_borrow_rate_that_cannot_apply_is_an_error() -> None:
    bars = flat()
    with pytest.raises(ConfigError, match=r"borrow_rate=0.1 has no effect: long-only trading never shorts"):
        simulate(bars, Signals(np.zeros(len(bars), dtype=bool)), costs=Costs(borrow_rate=0.1),
                 direction="long")
    with pytest.raises(ConfigError, match=r"borrow_rate=1.5 must be an annual rate in \[0, 1\)"):
        Costs(borrow_rate=1.5)


def test_the_paper_runner_refuses_shorts_that_pay_borrow_fees() -> None:
    from paper_helpers import spec_for

    with pytest.raises(ConfigError, match=r"paper trading shorts with a borrow_rate \(0.05\) is not"):
        spec_for("sma_cross", costs=Costs(borrow_rate=0.05))
    assert spec_for("sma_cross", direction="long").costs.borrow_rate == 0.0


def test_square_root_impact_is_added_to_the_slippage_of_each_fill() -> None:
    # closes alternate 100, 101: every log return is +-log(1.01); volume 1,000 a bar
    n = 12
    index = pd.date_range("2025-01-01", periods=n, freq="1D", tz="UTC", name="ts")
    close = np.array([100.0, 101.0] * (n // 2))
    bars = pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close,
                         "volume": 1_000.0}, index=index)
    long = np.zeros(n, dtype=bool)
    long[7] = True  # fills at bar 8's open
    exits = np.zeros(n, dtype=bool)
    exits[9] = True  # out at bar 10's open
    costs = Costs(fees=0.0, slippage=0.001, vol_window=5, impact=0.5, adv_window=4)
    res = simulate(bars, Signals(long, exits), costs=costs, sizing=Sizing(fraction=0.2), periods_per_year=365)
    sigma = float(pd.Series(np.diff(np.log(close))).iloc[2:7].std())  # the 5 returns of bars 3..7 (as 5..9)
    k = 0.5 * sigma / np.sqrt(1_000.0)
    entry, exit_ = res.orders.iloc[0], res.orders.iloc[1]
    target = 0.2 * 100_000 / 100.0  # f * E / P: 200 units, before costs
    assert entry["price"] == pytest.approx(100.0 * (1 + 0.001 + k * np.sqrt(target)), rel=1e-12)
    q = entry["size"]
    assert exit_["price"] == pytest.approx(100.0 * (1 - 0.001 - k * np.sqrt(q)), rel=1e-12)
    free = simulate(bars, Signals(long, exits), costs=Costs(fees=0.0, slippage=0.001),
                    sizing=Sizing(fraction=0.2), periods_per_year=365)
    assert free.orders.iloc[0]["price"] == pytest.approx(100.1, rel=1e-12)
    with pytest.raises(ConfigError, match=r"impact=20.0 must be a square-root impact coefficient"):
        Costs(impact=20.0)


def perp(n: int = 6, price: float = 100.0, rates: list[float] | None = None) -> pd.DataFrame:
    bars = flat(n, price)
    return bars.assign(funding_rate=rates if rates is not None else [0.0] * n)


def test_funding_is_paid_by_longs_and_received_by_shorts_at_the_open_of_its_bar() -> None:
    # a funding event on bars 2 (+0.1 %), 3 (none), 4 (-0.05 %) and 5 (+0.2 %); the position is held
    # into bar 2 (bought at bar 1's open) and sold at bar 5's open, after bar 5's funding settles
    rates = [0.01, 0.0, 0.001, np.nan, -0.0005, 0.002]
    bars = perp(rates=rates)
    long, exits = np.zeros(6, dtype=bool), np.zeros(6, dtype=bool)
    long[0], exits[4] = True, True
    costs = Costs(fees=0.0, slippage=0.0, funding=True)
    res = simulate(bars, Signals(long, exits), costs=costs, sizing=Sizing(fraction=0.5), periods_per_year=365)
    # 500 units of 100: bar 2 pays 50,000 x 0.001 = 50, bar 4 receives 25, bar 5 pays 100
    assert res.equity.tolist() == [100_000.0, 100_000.0, 99_950.0, 99_950.0, 99_975.0, 99_875.0]
    assert res.charges["funding"] == pytest.approx(125.0)
    no = np.zeros(6, dtype=bool)
    short = simulate(bars, Signals(no, short_entries=long, short_exits=exits), costs=costs,
                     sizing=Sizing(fraction=0.5), periods_per_year=365)
    assert short.equity.tolist() == [100_000.0, 100_000.0, 100_050.0, 100_050.0, 100_025.0, 100_125.0]
    # valued at the bar's open, not its close: an open of 110 on bar 2 makes the payment 55
    moved = bars.copy()
    moved.iloc[2, moved.columns.get_loc("open")] = 110.0
    moved.iloc[2, moved.columns.get_loc("high")] = 110.0
    res = simulate(moved, Signals(long, exits), costs=costs, sizing=Sizing(fraction=0.5),
                   periods_per_year=365)
    assert res.equity.iloc[2] == pytest.approx(100_000.0 - 55.0)


def test_funding_asked_where_there_is_none_is_one_line() -> None:
    from workbench.errors import DataError

    bars = flat()
    long = np.zeros(6, dtype=bool)
    with pytest.raises(DataError, match=r"funding asked for BTC/USDT, a spot symbol: funding applies to "
                                        r"perpetual futures \(e.g. BTC/USDT:USDT\)"):
        simulate({"BTC/USDT": bars}, {"BTC/USDT": Signals(long)}, costs=Costs(funding=True))
    with pytest.raises(DataError, match=r"funding asked for BTC/USDT:USDT, but its bars carry no funding "
                                        r"history: fill it with `workbench data funding"):
        simulate({"BTC/USDT:USDT": bars}, {"BTC/USDT:USDT": Signals(long)}, costs=Costs(funding=True))
    with pytest.raises(ConfigError, match=r"funding='yes please' must be true or false"):
        Costs.parse("funding=yes please")
    assert Costs.parse("funding=true,volume_cap=0.1,limit_fill=touch") == Costs(
        funding=True, volume_cap=0.1, limit_fill="touch")


def test_the_paper_runner_refuses_volume_caps_and_recorded_spreads_in_one_line(tmp_path) -> None:
    from paper_helpers import spec_for

    from workbench.paper.journal import Journal
    from workbench.paper.runner import Runner
    from workbench.paper.sim import SimBroker

    class WholeOrders(SimBroker):
        name = "whole-orders"
        volume_caps = False

    spec = spec_for("sma_cross", costs=Costs(volume_cap=0.1))
    with Journal(tmp_path / "j.sqlite") as j, pytest.raises(
            ConfigError, match=r"the whole-orders broker fills whole orders, not volume_cap=0.1 of a bar's "
                               r"volume \(the sim broker does\)"):
        Runner([spec], broker=WholeOrders(), journal=j, feeds={})
    from workbench.paper.feed import BarFeed

    spec = spec_for("sma_cross", costs=Costs(spread="binance"))
    bars = flat().rename_axis("ts")
    feed = BarFeed(["BTC/USDT"], "1d", frames={"BTC/USDT": bars})  # bars without a recorded half-spread
    with Journal(tmp_path / "k.sqlite") as j, pytest.raises(
            ConfigError, match=r"spread=binance needs the bars to carry the recorded half-spread; paper "
                               r"replays do \(workbench paper replay\), live paper trading does not yet"):
        Runner([spec], broker=SimBroker(), journal=j, feeds={spec.name: feed})
    assert spec_for("sma_cross", costs=Costs(funding=True)).costs.funding  # tests/test_paper_funding.py


def test_volume_cap_cuts_a_market_entry_and_cancels_the_rest() -> None:
    bars = flat().assign(volume=[1_000.0, 1_000.0, 50.0, 1_000.0, 1_000.0, 1_000.0])
    long = np.zeros(6, dtype=bool)
    long[1] = True  # at bar 2's open: the target is 500 units, bar 2 traded 50, the cap lets 10 fill
    res = simulate(bars, Signals(long), costs=Costs(fees=0.0, slippage=0.0, volume_cap=0.2),
                   sizing=Sizing(fraction=0.5), periods_per_year=365)
    assert res.orders[["size", "price", "reason"]].values.tolist() == [[10.0, 100.0, "entry"]]
    with pytest.raises(ConfigError, match=r"volume_cap=1.5 must be a fraction of a bar's volume in \(0, 1\]"):
        Costs(volume_cap=1.5)
    with pytest.raises(ConfigError, match=r"limit_fill='pinch' is unknown; use through"):
        Costs(limit_fill="pinch")
