"""The engine as a whole: no look-ahead at the trade level, parity with vectorbt, recorded inputs,
calendar-aware annualisation and one-line errors on bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbench.backtest import Costs, Sizing, backtest, simulate
from workbench.backtest.metrics import periods_per_year
from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import ConfigError, DataError, WorkbenchError
from workbench.strategies import Signals, get_strategy, list_strategies
from workbench.version import code_version

NO_RESEARCH = Path(__file__).with_name("_no_research_here_")
ML_CHEAP = {"model": "logistic", "refit_every": 1000, "min_train": 1000, "horizon": 6, "purge": 6}
# parameters that make each built-in trade both sides and use its stops where it has them
EXERCISE: dict[str, dict[str, Any]] = {
    "sma_cross": {"short": True},
    "ema_cross": {"short": True},
    "macd": {"short": True},
    "rsi_mr": {"short": True, "stop_loss": 0.05},
    "bollinger_mr": {"short": True},
    "donchian_breakout": {"trail": True},
    "regime": {"sma_cross.short": True, "sma_cross.slow": 40},
    "ml_classifier": ML_CHEAP,
}
START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-05-01", tz="UTC")


def builtins() -> list[str]:
    """Every built-in the registry knows (a new module is checked here without editing this file)."""
    return sorted(list_strategies(NO_RESEARCH))


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    """About 2,900 hourly bars of two seeded synthetic symbols."""
    src = SyntheticSource(seed=7)
    return {s: src.bars(s, "1h", START, END).set_index("ts") for s in ("BTC/USDT", "ETH/USDT")}


def one_line(exc: pytest.ExceptionInfo[WorkbenchError], *needles: str) -> None:
    text = str(exc.value)
    assert "\n" not in text, text
    for n in needles:
        assert n in text, text


# ---------------------------------------------------------------- (a) look-ahead at the trade level

@pytest.mark.parametrize("fill", ["next_open", "close"])
@pytest.mark.parametrize("name", builtins())
def test_orders_and_equity_up_to_t_ignore_bars_after_t(name: str, fill: str,
                                                       bars: dict[str, pd.DataFrame]) -> None:
    """Bars after t change nothing that happened at or before t: orders filled <= t and equity <= t.

    With next_open a signal on bar t fills at t+1 (absent from the truncated run), so orders are
    compared up to and including t; stops and close fills at t use bar t, which both runs have.
    """
    data = bars["BTC/USDT"]
    settings: dict[str, Any] = {"fill": fill}
    if fill == "next_open":  # also let the volatility-based slippage and sizing see only the past
        settings.update(costs=Costs(slippage_vol=0.3, vol_window=10),
                        sizing=Sizing(kind="volatility", target_vol=0.4))
    params = EXERCISE.get(name, {})
    full = backtest(name, data, params, **settings)
    assert len(full.orders) > 4, f"{name} should trade on this data"
    for frac in (0.55, 0.8):
        t = int(len(data) * frac)
        cut = data.index[t]
        part = backtest(name, data.iloc[: t + 1], params, **settings)
        want = full.orders[full.orders["time"] <= cut].reset_index(drop=True)
        got = part.orders.reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=f"{name} orders up to {cut}")
        pd.testing.assert_series_equal(part.equity, full.equity.iloc[: t + 1], check_exact=True,
                                       obj=f"{name} equity up to {cut}")


# ---------------------------------------------------------------- (b) the vectorbt Portfolio

def random_signals(rng: np.random.Generator, n: int) -> Signals:
    """Sparse entries and exits on both sides with per-bar stop, target and trailing distances."""
    def sparse(p: float) -> np.ndarray:
        return rng.random(n) < p

    def dist(low: float, high: float) -> np.ndarray:
        d = rng.uniform(low, high, n)
        d[rng.random(n) < 0.3] = np.nan
        return d

    return Signals(sparse(0.02), sparse(0.01), sparse(0.02), sparse(0.01), stop_loss=dist(0.005, 0.03),
                   take_profit=dist(0.01, 0.06), trailing_stop=dist(0.01, 0.04))


def assert_portfolio_matches(result: Any) -> None:
    pf = result.portfolio
    np.testing.assert_allclose(pf.value().to_numpy(), result.equity.to_numpy(), rtol=1e-9)
    vbt_trades = pf.exit_trades.records_readable
    ours = result.trades
    assert len(vbt_trades) == len(ours)
    key_v = vbt_trades.assign(symbol=vbt_trades["Column"].astype(str)).sort_values(
        ["Entry Timestamp", "symbol"], kind="stable").reset_index(drop=True)
    key_o = ours.sort_values(["entry_time", "symbol"], kind="stable").reset_index(drop=True)
    assert (key_v["symbol"] == key_o["symbol"]).all()
    assert (key_v["Direction"].str.lower() == key_o["direction"]).all()
    assert (key_v["Status"].str.lower() == key_o["status"]).all()
    np.testing.assert_allclose(key_v["Size"], key_o["size"], rtol=1e-9)
    np.testing.assert_allclose(key_v["Avg Entry Price"], key_o["entry_price"], rtol=1e-9)
    closed = (key_o["status"] == "closed").to_numpy()
    assert closed.sum() > 10
    for theirs, mine in (("PnL", "pnl"), ("Return", "return"), ("Avg Exit Price", "exit_price"),
                         ("Exit Fees", "exit_fees")):
        np.testing.assert_allclose(key_v.loc[closed, theirs].to_numpy(dtype=float),
                                   key_o.loc[closed, mine].to_numpy(dtype=float), rtol=1e-9, atol=1e-9,
                                   err_msg=theirs)


def test_portfolio_of_a_multi_symbol_run_with_stops_and_shorts(bars: dict[str, pd.DataFrame]) -> None:
    result = backtest("rsi_mr", bars, {"short": True, "stop_loss": 0.03},
                      costs=Costs(fees=0.001, slippage=0.0005))
    trades = result.trades
    assert set(trades["symbol"]) == {"BTC/USDT", "ETH/USDT"}
    assert (trades["direction"] == "short").any() and (trades["exit_reason"] == "stop_loss").any()
    assert_portfolio_matches(result)


def test_portfolio_with_targets_trailing_stops_and_reversals(bars: dict[str, pd.DataFrame]) -> None:
    rng = np.random.default_rng(3)
    n = len(bars["BTC/USDT"])
    signals = {s: random_signals(rng, n) for s in bars}
    result = simulate(bars, signals, costs=Costs(fees=0.0015, slippage=0.001, slippage_vol=0.2),
                      fill="close", max_exposure=0.6)
    reasons = set(result.trades["exit_reason"])
    assert {"stop_loss", "take_profit", "trailing_stop", "signal"} <= reasons
    assert_portfolio_matches(result)


# ---------------------------------------------------------------- (c) vectorbt's from_signals

@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_long_only_orders_equal_vectorbt_from_signals(fill: str, bars: dict[str, pd.DataFrame]) -> None:
    import vectorbt as vbt

    data = bars["ETH/USDT"]
    costs = Costs(fees=0.001, slippage=0.0005)
    strat = get_strategy("sma_cross", NO_RESEARCH)
    params = strat.params({"fast": 10, "slow": 40})
    arrays = strat.signals(data, params).arrays(len(data))
    entries = pd.Series(arrays["long_entries"], index=data.index)
    exits = pd.Series(arrays["long_exits"], index=data.index)
    if fill == "next_open":  # a signal on bar t's close trades at bar t+1's open
        pf = vbt.Portfolio.from_signals(data["close"], entries.shift(1, fill_value=False),
                                        exits.shift(1, fill_value=False), price=data["open"],
                                        fees=costs.fees, slippage=costs.slippage, init_cash=100_000.0)
    else:
        pf = vbt.Portfolio.from_signals(data["close"], entries, exits, fees=costs.fees,
                                        slippage=costs.slippage, init_cash=100_000.0)
    result = backtest("sma_cross", data, params, costs=costs, fill=fill)
    theirs, ours = pf.orders.records_readable, result.orders
    assert len(ours) > 20 and len(theirs) == len(ours)
    assert (theirs["Timestamp"].to_numpy() == ours["time"].to_numpy()).all()
    assert (theirs["Side"].str.lower().to_numpy() == ours["side"].to_numpy()).all()
    for a, b in (("Size", "size"), ("Price", "price"), ("Fees", "fees")):
        np.testing.assert_allclose(theirs[a].to_numpy(), ours[b].to_numpy(), rtol=1e-9, err_msg=a)
    np.testing.assert_allclose(pf.value().to_numpy(), result.equity.to_numpy(), rtol=1e-9)


# ---------------------------------------------------------------- (d) what a result records

def test_inputs_record_everything_needed_to_reproduce_a_run(bars: dict[str, pd.DataFrame]) -> None:
    data = bars["BTC/USDT"]
    costs = Costs(fees=0.002, slippage=0.0001)
    sizing = Sizing(kind="volatility", target_vol=0.25)
    result = backtest("sma_cross", data, {"fast": 15}, costs=costs, fill="close", sizing=sizing,
                      direction="long", init_cash=50_000.0)
    inputs = result.inputs
    assert inputs["params"] == {"fast": 15, "slow": 50, "short": False}
    assert inputs["costs"] == {"fees": 0.002, "slippage": 0.0001, "slippage_vol": 0.0, "vol_window": 20,
                              "margin_rate": 0.0, "borrow_rate": 0.0, "impact": 0.0, "adv_window": 20,
                              "funding": False, "volume_cap": 0.0, "limit_fill": "through", "spread": ""}
    assert inputs["fill"] == "close" and inputs["direction"] == "long" and inputs["init_cash"] == 50_000.0
    assert inputs["sizing"]["kind"] == "volatility" and inputs["sizing"]["target_vol"] == 0.25
    assert inputs["code_version"] == code_version() and inputs["code_version"].startswith("0.")
    assert inputs["timeframe"] == "1h" and inputs["calendar"] == "24/7" and inputs["bars"] == len(data)
    fp = inputs["data_fingerprint"]
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    again = backtest("sma_cross", data.copy(), {"fast": 15}, costs=costs, fill="close", sizing=sizing)
    assert again.inputs["data_fingerprint"] == fp
    changed = data.copy()
    changed.iloc[1000, changed.columns.get_loc("close")] *= 1.0001
    other = backtest("sma_cross", changed, {"fast": 15}, costs=costs, fill="close", sizing=sizing)
    assert other.inputs["data_fingerprint"] != fp


# ---------------------------------------------------------------- (e) calendar-aware annualisation

def test_sharpe_scales_with_the_calendars_periods_per_year(bars: dict[str, pd.DataFrame]) -> None:
    """Identical bars on a 24/7 hourly index and on XNYS sessions: same equity, ratios scaled."""
    sessions = SyntheticSource(seed=7).bars("SPY", "1d", pd.Timestamp("2018-01-01", tz="UTC"),
                                            pd.Timestamp("2020-01-01", tz="UTC"))["ts"]
    n = len(sessions)
    values = bars["BTC/USDT"].iloc[:n].reset_index(drop=True)
    hourly = values.set_axis(pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC"))
    daily = values.set_axis(pd.DatetimeIndex(sessions))
    a = backtest("sma_cross", {"BTC/USDT": hourly}, {"fast": 10, "slow": 30})
    b = backtest("sma_cross", {"SPY": daily}, {"fast": 10, "slow": 30})
    assert (a.inputs["timeframe"], a.inputs["calendar"]) == ("1h", "24/7")
    assert (b.inputs["timeframe"], b.inputs["calendar"]) == ("1d", "XNYS")
    ppy_a, ppy_b = periods_per_year("1h", "24/7"), periods_per_year("1d", "XNYS")
    assert ppy_a == 8760 and 250 < ppy_b < 253
    assert a.inputs["periods_per_year"] == ppy_a and b.inputs["periods_per_year"] == ppy_b
    np.testing.assert_array_equal(a.equity.to_numpy(), b.equity.to_numpy())
    scale = math.sqrt(ppy_a / ppy_b)
    for key in ("sharpe", "sortino", "annual_volatility"):
        assert math.isclose(a.metrics[key], b.metrics[key] * scale, rel_tol=1e-9), key
    for key in ("total_return", "max_drawdown", "n_trades", "win_rate"):
        assert a.metrics[key] == b.metrics[key], key


# ---------------------------------------------------------------- (f) bad input

def test_nan_prices_are_one_line_data_errors(bars: dict[str, pd.DataFrame]) -> None:
    data = bars["BTC/USDT"].copy()
    data.iloc[500, data.columns.get_loc("low")] = np.nan
    with pytest.raises(DataError) as exc:
        backtest("sma_cross", data)
    one_line(exc, "NaN", str(data.index[500]))


def test_too_few_bars_for_the_windows(bars: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(DataError) as exc:
        backtest("sma_cross", bars["BTC/USDT"].iloc[:40], {"fast": 10, "slow": 50})
    one_line(exc, "needs at least 52 bars, got 40")
    with pytest.raises(DataError) as exc:
        simulate(bars["BTC/USDT"].iloc[:1], Signals(np.array([True])))
    one_line(exc, "at least 2 bars")


@pytest.mark.parametrize(("kwargs", "needles"), [
    ({"direction": "sideways"}, ["direction 'sideways' is unknown", "long, short or both"]),
    ({"fill": "next_close"}, ["fill 'next_close' is unknown", "next_open"]),
    ({"init_cash": -5.0}, ["init_cash=-5.0"]),
    ({"max_exposure": 0.0}, ["max_exposure=0.0"]),
])
def test_unknown_modes_and_bad_amounts_are_one_line_config_errors(
    kwargs: dict[str, Any], needles: list[str], bars: dict[str, pd.DataFrame]
) -> None:
    with pytest.raises(ConfigError) as exc:
        backtest("sma_cross", bars["BTC/USDT"], **kwargs)
    one_line(exc, *needles)


def test_negative_costs_and_malformed_cost_text() -> None:
    with pytest.raises(ConfigError) as exc:
        Costs(fees=-0.001)
    one_line(exc, "fees=-0.001", "[0, 0.5)")
    with pytest.raises(ConfigError) as exc:
        Costs.parse("fees=0.001,slipage=0.0005")
    one_line(exc, "'slipage=0.0005'", "slippage")
    with pytest.raises(ConfigError) as exc:
        Costs.parse("fees=lots")
    one_line(exc, "fees='lots' is not a number")


def test_unknown_strategy_and_parameter_suggest_the_name(bars: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ConfigError) as exc:
        backtest("sma_cros", bars["BTC/USDT"])
    one_line(exc, "did you mean 'sma_cross'")
    with pytest.raises(ConfigError) as exc:
        backtest("sma_cross", bars["BTC/USDT"], {"fsat": 5})
    one_line(exc, "did you mean 'fast'")
    with pytest.raises(ConfigError) as exc:
        backtest("sma_cross", bars["BTC/USDT"], {"fast": 60, "slow": 50})
    one_line(exc, "fast < slow")


def test_risk_sizing_with_a_constant_stop(bars: dict[str, pd.DataFrame]) -> None:
    """A strategy whose stop is one number for every bar (rsi_mr) can be risk-sized."""
    result = backtest("rsi_mr", bars["BTC/USDT"], {"stop_loss": 0.05}, sizing=Sizing(kind="risk", risk=0.01))
    entries = result.orders[result.orders["reason"] == "entry"]
    assert len(entries) > 5
    # risk 1 % over a 5 % stop: each entry commits 20 % of the equity of its moment (price x size)
    equity_at_fill = result.equity.shift(1).loc[entries["time"]].to_numpy()
    committed = (entries["price"] * entries["size"]).to_numpy() / equity_at_fill
    assert np.all((committed > 0.15) & (committed < 0.25))
    with pytest.raises(ConfigError) as exc:
        backtest("sma_cross", bars["BTC/USDT"], sizing=Sizing(kind="risk"))
    one_line(exc, "risk sizing needs a stop")


def test_order_records_have_vectorbts_layout() -> None:
    """The engine declares vectorbt's order dtype itself (no vectorbt import per backtest)."""
    from vectorbt.portfolio.enums import order_dt

    from workbench.backtest.engine import ORDER_DT

    assert order_dt == ORDER_DT


def test_one_execution_object_carries_the_settings_everywhere(bars, tmp_path: Path) -> None:
    """Issue 14 item 4: `Execution` round-trips through `to_dict`, reproduces a result from its
    inputs, equals the loose arguments, and refuses being given twice."""
    from workbench import Execution, Lot
    from workbench.backtest import sweep

    ex = Execution(costs=Costs(fees=0.002, slippage=0.0), sizing=Sizing(fraction=0.4), direction="long",
                   init_cash=50_000, max_exposure=0.5, lots={"BTC/USDT": Lot(step=0.01)})
    assert Execution.from_dict(ex.to_dict()) == ex
    assert Execution.from_dict(ex.to_dict(list(bars))).lot_map(list(bars)) == ex.lot_map(list(bars))
    a = backtest("sma_cross", bars, {"fast": 5, "slow": 20}, execution=ex)
    b = backtest("sma_cross", bars, {"fast": 5, "slow": 20}, costs=ex.costs, sizing=ex.sizing,
                 direction="long", init_cash=50_000, max_exposure=0.5, lots={"BTC/USDT": Lot(step=0.01)})
    assert a.metrics == b.metrics and a.inputs == b.inputs
    again = backtest("sma_cross", bars, {"fast": 5, "slow": 20}, execution=a.execution)
    assert again.metrics == a.metrics
    s = sweep("sma_cross", bars, {"fast": [5], "slow": [20]}, execution=ex, portfolio=True)
    assert s.table["total_return"].iloc[0] == pytest.approx(a.metrics["total_return"], rel=1e-12)
    with pytest.raises(ConfigError, match="not both"):
        backtest("sma_cross", bars, execution=ex, fill="close")
    with pytest.raises(ConfigError, match="fill 'tomorrow' is unknown"):
        Execution(fill="tomorrow")
