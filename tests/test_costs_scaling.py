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
