"""A portfolio of a 24/7 symbol and an exchange-session symbol (issue 13, item 4).

The timeline is the union of the symbols' bars; each trades only on its own bars (an order for a
closed market waits for its next bar), is marked at its last close in between, and the metrics are
annualised from the union calendar. Pinned against a plain pandas computation of the same portfolio.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import reference_sim as ref
from bars_factory import random_bars, session_bars

from workbench.backtest import Costs, backtest, simulate
from workbench.strategies import Signals
from workbench.strategies.registry import get_strategy

T0, T1 = "2024-03-04", "2024-03-22 23:00"


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index("ts")


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    btc = _frame(random_bars(pd.date_range(T0, T1, freq="1h", tz="UTC"), seed=1, price=60_000.0))
    spy = _frame(session_bars(T0, T1, "1h", seed=2))
    return {"BTC/USDT": btc, "SPY": spy}


def _at(frame: pd.DataFrame, ts: str) -> int:
    return int(frame.index.get_loc(pd.Timestamp(ts, tz="UTC")))


def test_btc_spy_portfolio_equals_an_independent_pandas_computation(bars) -> None:
    btc, spy = bars["BTC/USDT"], bars["SPY"]
    # SPY's entry signal on Friday's last session bar acts at Monday's first open (the market is
    # closed all weekend); BTC's signal on Monday 12:00 acts at 13:00: both enter at the same bar
    friday_close, monday_open = "2024-03-08 20:00", "2024-03-11 13:00"
    spy_exit_signal, spy_exit = "2024-03-20 15:00", "2024-03-20 16:00"
    sig = {}
    for sym, frame, entry, exit_ in (("BTC/USDT", btc, "2024-03-11 12:00", None),
                                     ("SPY", spy, friday_close, spy_exit_signal)):
        le = np.zeros(len(frame), dtype=bool)
        lx = np.zeros(len(frame), dtype=bool)
        le[_at(frame, entry)] = True
        if exit_:
            lx[_at(frame, exit_)] = True
        sig[sym] = Signals(long_entries=le, long_exits=lx)
    res = simulate(bars, sig, costs=Costs(fees=0.0, slippage=0.0), timeframe="1h")

    # the independent computation: union timeline, closes carried forward, fills at the own opens
    union = btc.index.union(spy.index)
    closes = pd.DataFrame({"btc": btc["close"], "spy": spy["close"]}).reindex(union).ffill()
    t_in, t_out = pd.Timestamp(monday_open, tz="UTC"), pd.Timestamp(spy_exit, tz="UTC")
    q_btc = 50_000.0 / btc.loc[t_in, "open"]
    q_spy = 50_000.0 / spy.loc[t_in, "open"]
    spy_value = np.where(union < t_out, q_spy * closes["spy"], q_spy * spy.loc[t_out, "open"])
    value = pd.Series(np.where(union < t_in, 100_000.0, q_btc * closes["btc"] + spy_value), index=union)
    r = value / value.shift(1).fillna(100_000.0) - 1
    ppy = 365 * 24  # one 24/7 symbol makes the union timeline hourly every day
    want = {
        "total_return": value.iloc[-1] / 100_000.0 - 1,
        "annual_return": (value.iloc[-1] / 100_000.0) ** (ppy / len(union)) - 1,
        "sharpe": r.mean() / r.std(ddof=1) * math.sqrt(ppy),
    }

    assert res.index.equals(union) and len(union) == len(btc) > len(spy)
    assert res.inputs["periods_per_year"] == ppy and res.inputs["bars"] == len(union)
    np.testing.assert_allclose(res.equity.to_numpy(), value.to_numpy(), rtol=1e-12)
    for key, v in want.items():
        assert res.metrics[key] == pytest.approx(v, rel=1e-9), key
    t = res.trades.set_index("symbol")
    assert t.loc["SPY", "entry_time"] == t_in and t.loc["BTC/USDT", "entry_time"] == t_in
    assert t.loc["SPY", "exit_time"] == t_out
    # the weekend: SPY has no bar, so it holds its Friday close while BTC moves
    weekend = (union >= pd.Timestamp("2024-03-16", tz="UTC")) & (union < pd.Timestamp("2024-03-18", tz="UTC"))
    assert not spy.index.isin(union[weekend]).any()
    np.testing.assert_allclose(res.equity[weekend] - q_btc * closes["btc"][weekend],
                               q_spy * spy.loc[:"2024-03-16", "close"].iloc[-1], rtol=1e-12)


def test_each_symbol_s_signals_come_from_its_own_bars(bars) -> None:
    """An SMA of SPY uses SPY bars only; no order of SPY falls outside its sessions; buy-and-hold
    buys each symbol at its own second bar."""
    res = backtest("sma_cross", bars, {"fast": 5, "slow": 12}, costs=Costs(fees=0.0, slippage=0.0))
    spy = bars["SPY"]
    alone = get_strategy("sma_cross").signals(spy, res.params).arrays(len(spy))
    assert res.signals["SPY"].index.equals(spy.index)
    np.testing.assert_array_equal(res.signals["SPY"]["long_entries"].to_numpy(), alone["long_entries"])
    spy_orders = res.orders[res.orders["symbol"] == "SPY"]
    assert len(spy_orders) > 0 and spy_orders["time"].isin(spy.index).all()
    assert res.inputs["calendar"] == "24/7" and res.inputs["periods_per_year"] == 8760
    # benchmark: each half bought at the symbol's own bar 1 open, marked at its last close
    union = res.index
    closes = pd.DataFrame({s: f["close"] for s, f in bars.items()}).reindex(union).ffill()
    want = pd.Series(0.0, index=union)
    for s, f in bars.items():
        q = 50_000.0 / f["open"].iloc[1]
        want += np.where(union < f.index[1], 50_000.0, q * closes[s])
    np.testing.assert_allclose(res.benchmark.to_numpy(), want.to_numpy(), rtol=1e-12)


GRID = {"fast": [5, 10], "slow": [20, 30]}
FIXED = {"short": False}


def test_sweep_runs_on_the_union_timeline(bars) -> None:
    """A portfolio sweep scores each combination exactly as `backtest` does on BTC+SPY; a per-symbol
    sweep scores SPY on its own sessions."""
    from workbench.backtest import sweep

    costs = Costs(fees=0.001, slippage=0.0005, slippage_vol=0.2)
    both = sweep("sma_cross", bars, GRID, fixed=FIXED, costs=costs, portfolio=True).table
    alone = sweep("sma_cross", bars, GRID, fixed=FIXED, costs=costs).table
    assert len(both) == 4 and len(alone) == 8
    strat = get_strategy("sma_cross")
    settings = ref.Settings(fees=costs.fees, slippage=costs.slippage, slippage_vol=costs.slippage_vol,
                            vol_window=costs.vol_window)
    for row in both.to_dict("records"):
        p = {"fast": row["fast"], "slow": row["slow"], **FIXED}
        bt = backtest("sma_cross", bars, p, costs=costs).metrics
        for key in ("total_return", "sharpe", "n_trades"):
            assert row[key] == pytest.approx(bt[key], rel=1e-9), (p, key)
        # and the reference simulator, fed each symbol's signals from its own bars, agrees
        sig = {s: strat.signals(f, strat.params(p)).arrays(len(f)) for s, f in bars.items()}
        value = ref.simulate(bars, sig, settings).value
        assert row["total_return"] == pytest.approx(value[-1] / settings.init_cash - 1, rel=1e-9)
    for row in alone[alone["symbol"] == "SPY"].to_dict("records"):
        p = {"fast": row["fast"], "slow": row["slow"], **FIXED}
        bt = backtest("sma_cross", {"SPY": bars["SPY"]}, p, costs=costs, timeframe="1h").metrics
        assert row["total_return"] == pytest.approx(bt["total_return"], rel=1e-9)


def test_walk_forward_folds_split_the_union_timeline(bars, tmp_path) -> None:
    from workbench.optimize.walkforward import walk_forward

    res = walk_forward("sma_cross", bars, folds=2, n_trials=3, fixed={**FIXED, "slow": 20}, seed=0,
                       save=False, portfolio=True, storage=str(tmp_path / "wf.journal"))
    union = bars["BTC/USDT"].index.union(bars["SPY"].index)
    assert res.settings["data"]["bars"] == len(union)
    oos = res.oos_equity.index
    start = union.get_loc(oos[0])
    assert oos.equals(union[start:])  # the test windows tile the end of the union timeline
    spy = res.oos_trades[res.oos_trades["symbol"] == "SPY"]
    assert spy["entry_time"].isin(bars["SPY"].index).all()
    assert len(res.oos_benchmark) == len(oos) and res.oos_benchmark.notna().all()


def test_volatility_sizing_annualises_each_symbol_with_its_own_market(bars) -> None:
    """SPY's hourly ATR is annualised with NYSE hours (about 1,764 bars a year), BTC's with 8,760: the
    union's 24/7 factor would make SPY look 2.2x as volatile and size it 2.2x too small."""
    from workbench.backtest import Sizing
    from workbench.backtest.metrics import periods_per_year

    sizing = Sizing(kind="volatility", target_vol=0.02, atr_window=10)  # small: no entry is capped by cash
    costs = Costs(fees=0.001, slippage=0.0)
    res = backtest("sma_cross", bars, {"fast": 5, "slow": 12}, costs=costs, sizing=sizing)
    strat = get_strategy("sma_cross")
    sig = {s: strat.signals(f, res.params).arrays(len(f)) for s, f in bars.items()}
    own = {"BTC/USDT": 8760.0, "SPY": periods_per_year("1h", "XNYS")}
    assert 1700 < own["SPY"] < 1800
    settings = ref.Settings(fees=costs.fees, sizing="volatility", target_vol=0.02, atr_window=10,
                            periods_per_year=8760.0, own_periods_per_year=own)
    want = ref.simulate(bars, sig, settings)
    np.testing.assert_allclose(res.equity.to_numpy(), want.value, rtol=1e-9)
    spy = res.orders[(res.orders["symbol"] == "SPY") & (res.orders["side"] == "buy")]
    union = ref.simulate(bars, sig, ref.Settings(**{**settings.__dict__, "own_periods_per_year": None}))
    spy_union = [o for o in union.orders if o.symbol == "SPY" and o.side == "buy"]
    assert len(spy) and spy_union
    ratio = spy["size"].iloc[0] * spy["price"].iloc[0] / (spy_union[0].size * spy_union[0].price)
    assert ratio == pytest.approx(math.sqrt(8760.0 / own["SPY"]), rel=1e-9)


def test_a_calendar_the_bars_contradict_is_refused(bars) -> None:
    """A given calendar decides the annualisation of every metric: one the bars contradict is an error."""
    from workbench.errors import ConfigError

    sig = {s: Signals(long_entries=np.zeros(len(f), dtype=bool)) for s, f in bars.items()}
    with pytest.raises(ConfigError, match="around the clock"):
        simulate(bars, sig, timeframe="1h", calendar="XNYS")
    spy = {"SPY": bars["SPY"]}
    with pytest.raises(ConfigError, match="no weekend bar"):
        simulate(spy, {"SPY": sig["SPY"]}, timeframe="1h", calendar="24/7")
    assert simulate(spy, {"SPY": sig["SPY"]}, timeframe="1h", calendar="XNYS").inputs["calendar"] == "XNYS"
