"""Parity: the paper runner driven over past bars trades exactly what the backtest trades.

Every built-in strategy is replayed through the runner, its journal and the simulated broker, one tick
per bar close, and compared trade by trade with a backtest of the same bars, parameters and costs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from paper_helpers import BRACKETS, brackets_registered, build_lake, spec_for

from workbench.backtest.engine import Costs, Lot, Sizing
from workbench.errors import ConfigError, DataError
from workbench.paper.journal import Journal
from workbench.paper.replay import compare_trades, journal_trades, replay
from workbench.strategies.registry import list_strategies

# two weeks of 1h bars (336 ticks a replay): enough for the stops, targets, reversals and trade
# counts asserted below; most tests here replay it once or more
PERIOD = ("2025-03-01", "2025-03-15")


@pytest.fixture(autouse=True)
def _brackets():
    with brackets_registered():
        yield


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory):
    return build_lake(tmp_path_factory.mktemp("paper_lake"))


def _params(name: str) -> dict:
    if name == "ml_classifier":  # the smallest model the space allows, refitted less often
        return {"min_train": 500, "window": 500, "refit_every": 1000}
    return {}


BUILTINS = sorted(n for n in list_strategies() if n != BRACKETS.name)


def _check(res) -> None:
    assert res.parity.ok, f"{res.parity.summary()}\n{res.parity.differences.to_string()}"
    assert len(res.trades) == len(res.backtest.trades)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_strategy_replays_trade_for_trade(lake, tmp_path: Path, name: str) -> None:
    start, end = PERIOD if name != "ml_classifier" else ("2025-03-01", "2025-03-08")
    res = replay(spec_for(name, _params(name)), start, end, lake=lake, workdir=tmp_path)
    _check(res)
    if name in ("sma_cross", "macd", "donchian_breakout", "bollinger_mr"):
        assert len(res.trades) >= 2, "the period should hold a few trades, or this test proves little"


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_stops_targets_trailing_and_reversals_in_a_two_symbol_portfolio(
    lake, tmp_path: Path, fill: str
) -> None:
    spec = spec_for(
        BRACKETS.name,
        {"seed": 3},
        symbols=("BTC/USDT", "ETH/USDT"),
        fill=fill,
        costs=Costs(fees=0.0007, slippage=0.0003, slippage_vol=0.3),
        max_exposure=0.8,
    )
    res = replay(spec, *PERIOD, lake=lake, workdir=tmp_path)
    _check(res)
    reasons = set(res.trades["exit_reason"])
    assert {"stop_loss", "take_profit", "signal"} <= reasons, reasons
    assert set(res.trades["direction"]) == {"long", "short"}
    assert set(res.trades["symbol"]) == {"BTC/USDT", "ETH/USDT"}


@pytest.mark.parametrize(
    "sizing",
    [
        Sizing(kind="risk", risk=0.005),
        Sizing(kind="volatility", target_vol=0.3),
        Sizing(kind="fixed", fraction=0.4),
    ],
)
def test_sizing_modes_replay_trade_for_trade(lake, tmp_path: Path, sizing: Sizing) -> None:
    spec = spec_for("donchian_breakout", symbols=("BTC/USDT", "ETH/USDT"), sizing=sizing, max_exposure=0.7)
    _check(replay(spec, *PERIOD, lake=lake, workdir=tmp_path))


def test_lots_and_minimums_replay_trade_for_trade(lake, tmp_path: Path) -> None:
    """The runner rounds down to the artifact's lot and refuses entries below a minimum, as the
    backtest does (SEMANTICS.md "Lots and minimums")."""
    lots = {"BTC/USDT": Lot(step=0.01, min_notional=100.0), "ETH/USDT": Lot(step=1.0, min_qty=2.0)}
    spec = spec_for(BRACKETS.name, {"seed": 3}, symbols=("BTC/USDT", "ETH/USDT"), lots=lots)
    res = replay(spec, *PERIOD, lake=lake, workdir=tmp_path)
    _check(res)
    for sym, step in (("BTC/USDT", 0.01), ("ETH/USDT", 1.0)):
        sizes = res.trades.loc[res.trades["symbol"] == sym, "size"].to_numpy()
        assert len(sizes) and np.allclose(sizes / step, np.round(sizes / step), rtol=0, atol=1e-6)


def test_long_margin_is_refused_by_the_runner_rather_than_traded_differently() -> None:
    """The journal books no margin interest: a spec whose longs would borrow is an error."""
    with pytest.raises(ConfigError, match=r"on margin .* not supported"):
        spec_for("donchian_breakout", sizing=Sizing(fraction=0.9), max_exposure=2.0)
    with pytest.raises(ConfigError, match=r"margin_rate=0\.1"):
        spec_for("donchian_breakout", direction="long", costs=Costs(margin_rate=0.1))
    assert spec_for("donchian_breakout", direction="short", max_exposure=2.0).max_exposure == 2.0


def test_trailing_stop_strategy_with_close_fills(lake, tmp_path: Path) -> None:
    res = replay(
        spec_for("breakout_momentum", fill="close"), "2025-02-01", "2025-04-01", lake=lake, workdir=tmp_path
    )
    _check(res)


def test_journal_holds_every_fill_and_the_ledger_matches_the_broker(lake, tmp_path: Path) -> None:
    spec = spec_for(BRACKETS.name, {"seed": 5}, symbols=("BTC/USDT", "ETH/USDT"))
    res = replay(spec, *PERIOD, lake=lake, workdir=tmp_path)
    with Journal(res.journal_path) as j:
        fills = j.fills_frame(spec.name)
        orders = j.orders_frame(spec.name)
        assert fills["fill_id"].is_unique
        assert len(orders) == orders["client_order_id"].nunique()
        assert not orders["status"].isin(["intent", "unknown"]).any()
        ledger = j.ledger(spec.name, spec.capital)
        bt = res.backtest
        # the ledger's exact cash and positions are the backtest's at the end
        assert float(ledger.cash) == pytest.approx(bt._records is not None and _bt_cash(bt), rel=1e-9)
        open_bt = bt.trades[bt.trades["status"] == "open"]
        for _, t in open_bt.iterrows():
            q = float(ledger.positions[str(t["symbol"])])
            assert abs(q) == pytest.approx(t["size"], rel=1e-9)


def _bt_cash(bt) -> float:
    last = bt.equity.iloc[-1]
    pos = 0.0
    for _, t in bt.trades[bt.trades["status"] == "open"].iterrows():
        sign = 1 if t["direction"] == "long" else -1
        pos += sign * t["size"] * bt.bars[str(t["symbol"])]["close"].iloc[-1]
    return float(last - pos)


def test_a_replay_resumes_from_its_journal_without_duplicates(lake, tmp_path: Path) -> None:
    spec = spec_for("sma_cross", {"fast": 5, "slow": 20})
    first = replay(spec, *PERIOD, lake=lake, workdir=tmp_path / "a")
    again = replay(spec, *PERIOD, lake=lake, workdir=tmp_path / "a")  # every tick already done
    _check(again)
    pd.testing.assert_frame_equal(first.trades, again.trades)


def test_trailing_window_replay_matches_for_finite_memory_strategies(lake, tmp_path: Path) -> None:
    """Moving averages forget bars older than their window: the live (trailing) setting gives the same trades.

    Recursive indicators (EMA, Wilder's ATR) do not forget: for them only the anchored replay is exact,
    and `paper drift` shows what the trailing window changes.
    """
    for name in ("sma_cross", "bollinger_mr"):
        res = replay(spec_for(name), *PERIOD, lake=lake, workdir=tmp_path / name, window="trailing")
        _check(res)
        assert len(res.trades) >= 2


def test_compare_trades_reports_each_difference() -> None:
    t0 = pd.Timestamp("2025-01-01", tz="UTC")
    row = {
        "symbol": "X",
        "direction": "long",
        "entry_time": t0,
        "entry_price": 100.0,
        "exit_time": t0,
        "exit_price": 101.0,
        "size": 1.0,
        "pnl": 1.0,
        "return": 0.01,
        "entry_fees": 0.0,
        "exit_fees": 0.0,
        "exit_reason": "signal",
        "status": "closed",
    }
    a = pd.DataFrame([row])
    b = pd.DataFrame(
        [
            {**row, "exit_price": 101.5, "exit_reason": "stop_loss"},
            {**row, "entry_time": t0 + pd.Timedelta("1h")},
        ]
    )
    par = compare_trades(a, b)
    assert not par.ok and par.matched == 0
    assert set(par.differences["field"]) == {"exit_price", "exit_reason", "trade"}
    assert compare_trades(a, a).ok
    assert np.isclose(compare_trades(a, a.assign(size=1.0 + 1e-12)).matched, 1)


def test_bad_replay_inputs(lake, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be after start"):
        replay(spec_for("sma_cross"), "2025-03-02", "2025-03-01", lake=lake)
    with pytest.raises(DataError, match="no 1h bars"):
        replay(spec_for("sma_cross"), "2026-01-01", "2026-02-01", lake=lake)
    with pytest.raises(ConfigError, match="window"):
        replay(spec_for("sma_cross"), *PERIOD, lake=lake, window="sliding")


def test_journal_trades_of_an_empty_journal(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        assert journal_trades(j, "nothing").empty


def test_equity_sessions_replay_trade_for_trade(tmp_path: Path) -> None:
    """NYSE hours: the signal of a session's last bar acts at the next session's open, as in the backtest."""
    lake = build_lake(tmp_path / "eq", symbols=("AAPL",))
    spec = replace(spec_for("sma_cross", {"fast": 5, "slow": 20}, symbols=("AAPL",)), calendar="XNYS",
                   periods_per_year=1764.0)
    res = replay(spec, "2025-02-01", "2025-04-01", lake=lake, workdir=tmp_path / "r")
    _check(res)
    assert len(res.trades) >= 3
    overnight = res.trades["entry_time"].dt.tz_convert("America/New_York").dt.hour.min()
    assert overnight >= 9


@pytest.fixture(scope="module")
def mixed_lake(tmp_path_factory: pytest.TempPathFactory):
    """BTC/USDT every hour and SPY in NYSE sessions: two calendars in one portfolio."""
    return build_lake(tmp_path_factory.mktemp("mixed_lake"), symbols=("BTC/USDT", "SPY"),
                      start=pd.Timestamp("2025-02-01", tz="UTC"), end=pd.Timestamp("2025-04-01", tz="UTC"))


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_btc_and_spy_replay_on_the_union_timeline_trade_for_trade(mixed_lake, tmp_path: Path,
                                                                  fill: str) -> None:
    """Issue 13 item 4: the runner trades each symbol on its own bars of the union timeline, as the
    backtest does; SPY's signals of a session's last bar wait for the next session's open."""
    spec = spec_for(BRACKETS.name, {"seed": 5}, symbols=("BTC/USDT", "SPY"), fill=fill,
                    costs=Costs(fees=0.0007, slippage=0.0003, slippage_vol=0.3), max_exposure=0.8)
    res = replay(spec, "2025-03-01", "2025-03-29", lake=mixed_lake, workdir=tmp_path)
    _check(res)
    t = res.trades
    assert set(t["symbol"]) == {"BTC/USDT", "SPY"}
    spy = t[t["symbol"] == "SPY"]
    assert len(spy) >= 5 and len(t[t["symbol"] == "BTC/USDT"]) > len(spy)
    # the union timeline: every hour, SPY's fills only on its session bars
    bars = mixed_lake.read_bars("synthetic", "SPY", "1h")
    own = set(pd.DatetimeIndex(bars["ts"]))
    assert set(spy["entry_time"]) <= own and set(spy["exit_time"].dropna()) <= own
    assert res.backtest.inputs["bars"] == len(res.backtest.equity)
    if fill == "next_open":  # some SPY entry waited over a night or a weekend for its market to open
        ts = pd.DatetimeIndex(sorted(own))
        prev = ts[ts.searchsorted(pd.DatetimeIndex(spy["entry_time"])) - 1]
        assert ((pd.DatetimeIndex(spy["entry_time"]) - prev) > pd.Timedelta(hours=1)).any()


def test_btc_and_spy_volatility_sizing_replays_trade_for_trade(mixed_lake, tmp_path: Path) -> None:
    """Each symbol's ATR annualised with its own market's bars per year, in the runner as in the backtest."""
    spec = spec_for("sma_cross", {"fast": 5, "slow": 12}, symbols=("BTC/USDT", "SPY"),
                    sizing=Sizing(kind="volatility", target_vol=0.05, atr_window=10))
    res = replay(spec, "2025-03-01", "2025-03-29", lake=mixed_lake, workdir=tmp_path)
    _check(res)
    assert set(res.trades["symbol"]) == {"BTC/USDT", "SPY"}
