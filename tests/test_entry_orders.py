"""Entry orders (SEMANTICS.md "Entry orders"): limit, stop and stop-limit entries resting for a time
in force, in the reference simulator, against hand-made candles. Bar 0 closes at 100 and signals the
entry; with next-open fills the order rests from bar 1. Fees 0, slippage 1 % (market and stop fills
pay it, limit fills do not), the whole equity (100,000) per entry."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import reference_sim as ref

NAN = math.nan
SLIP = 0.01


def run(candles: list[tuple[float, float, float, float]], order: str, *, limit: float = NAN,
        stop: float = NAN, tif: int = 3, short: bool = False, fill: str = "next_open",
        limit_fill: str = "through", sl: float = NAN, tp: float = NAN,
        more: dict[int, dict[str, Any]] | None = None) -> ref.Result:
    """The reference on `candles` (open, high, low, close) with one entry signalled at bar 0;
    `more` adds signals on later bars ({bar: {key: value}})."""
    n = len(candles)
    index = pd.date_range("2025-01-01", periods=n, freq="1D", tz="UTC")
    bars = pd.DataFrame(candles, columns=["open", "high", "low", "close"], index=index).assign(volume=1.0)
    sig: dict[str, Any] = {k: np.zeros(n, dtype=bool) for k in ref.SIGNAL_KEYS}
    sig["short_entries" if short else "long_entries"][0] = True
    sig["stop_loss"], sig["take_profit"] = np.full(n, sl), np.full(n, tp)
    sig["trailing_stop"] = np.full(n, NAN)
    sig["order_type"], sig["limit_price"] = ["market"] * n, np.full(n, NAN)
    sig["stop_price"], sig["time_in_force"] = np.full(n, NAN), np.ones(n, dtype=int)
    sig["order_type"][0], sig["limit_price"][0], sig["stop_price"][0] = order, limit, stop
    sig["time_in_force"][0] = tif
    for bar, values in (more or {}).items():
        for key, value in values.items():
            sig[key][bar] = value
    settings = ref.Settings(slippage=SLIP, fill=fill, fraction=1.0, limit_fill=limit_fill,
                            periods_per_year=365)
    return ref.simulate({"X": bars}, {"X": sig}, settings)


def entry(res: ref.Result) -> tuple[int, float] | None:
    """(bar, fill price) of the first entry, None if nothing filled."""
    found = [(o.bar, o.price) for o in res.orders if o.reason == "entry"]
    return found[0] if found else None


C0 = (100.0, 101.0, 99.0, 100.0)  # the signal bar
CASES: list[tuple[str, list, dict[str, Any], tuple[int, float] | None]] = [
    # (what, candles after bar 0, order, expected (bar, price))
    ("buy limit not reached, then traded through", [(100, 101, 96, 97), (97, 98, 94, 95)],
     {"order": "limit", "limit": 95.0}, (2, 95.0)),
    ("buy limit: a gap through it fills at the better open", [(94, 96, 93, 95)],
     {"order": "limit", "limit": 95.0}, (1, 94.0)),
    ("buy limit: a low at the limit is no fill (through)", [(97, 98, 95, 96)],
     {"order": "limit", "limit": 95.0}, None),
    ("buy limit: a low at the limit fills with touch", [(97, 98, 95, 96)],
     {"order": "limit", "limit": 95.0, "limit_fill": "touch"}, (1, 95.0)),
    ("buy stop crossed intrabar fills at the stop, slipped", [(100, 106, 99, 104)],
     {"order": "stop", "stop": 105.0}, (1, 105.0 * (1 + SLIP))),
    ("buy stop: a gap above fills at the open, slipped", [(107, 108, 106, 107)],
     {"order": "stop", "stop": 105.0}, (1, 107.0 * (1 + SLIP))),
    ("stop-limit triggered intrabar fills at the trigger", [(100, 105.5, 99, 105)],
     {"order": "stop_limit", "stop": 105.0, "limit": 106.0}, (1, 105.0)),
    ("stop-limit triggered at an open within the limit fills there", [(105.5, 107, 105, 106)],
     {"order": "stop_limit", "stop": 105.0, "limit": 106.0}, (1, 105.5)),
    ("stop-limit: an open past the limit waits a bar, then a limit",
     [(108, 109, 104, 108), (107, 108, 105.5, 106)],
     {"order": "stop_limit", "stop": 105.0, "limit": 106.0}, (2, 106.0)),
    ("a time in force of 2 bars expires before the fall",
     [(99, 100, 97, 98), (98, 99, 96, 97), (96, 97, 90, 91)],
     {"order": "limit", "limit": 95.0, "tif": 2}, None),
    ("sell limit (short) traded through above", [(100, 106, 99, 105)],
     {"order": "limit", "limit": 105.0, "short": True}, (1, 105.0)),
    ("sell stop (short) crossed below, slipped", [(100, 101, 94, 95)],
     {"order": "stop", "stop": 95.0, "short": True}, (1, 95.0 * (1 - SLIP))),
    ("close fills: the order rests from the next bar", [(94, 96, 93, 95)],
     {"order": "limit", "limit": 95.0, "fill": "close"}, (1, 94.0)),
    ("a market entry is unchanged", [(102, 103, 101, 102)], {"order": "market"}, (1, 102.0 * (1 + SLIP))),
]


@pytest.mark.parametrize(("what", "after", "order", "expected"), CASES, ids=[c[0] for c in CASES])
def test_entry_order_candles(what: str, after: list, order: dict[str, Any],
                             expected: tuple[int, float] | None) -> None:
    order = dict(order)
    kind = order.pop("order")
    got = entry(run([C0, *[tuple(map(float, c)) for c in after]], kind, **order))
    if expected is None:
        assert got is None, what
    else:
        assert got is not None and got[0] == expected[0], what
        assert got[1] == pytest.approx(expected[1], rel=1e-12), what


def test_an_exit_cancels_a_resting_entry_and_a_new_entry_replaces_it() -> None:
    candles = [C0, (99, 100, 97, 98), (97, 98, 93, 94), (93, 94, 91, 92)]
    cancelled = run(candles, "limit", limit=95.0, tif=5, more={1: {"long_exits": True}})
    assert entry(cancelled) is None
    replaced = run(candles, "limit", limit=95.0, tif=5,
                   more={1: {"long_entries": True, "order_type": "limit", "limit_price": 91.5,
                                  "time_in_force": 5}})
    assert entry(replaced) == (3, 91.5)  # 95 would have filled on bar 2 (low 93); 91.5 fills on bar 3
    assert entry(run(candles, "limit", limit=95.0, tif=5)) == (2, 95.0)


def test_a_limit_filled_intrabar_can_be_stopped_in_the_same_bar_but_not_take_profit() -> None:
    # buy limit 95, filled as the bar falls to 92: its 2 % stop (93.1) is hit in the same bar
    res = run([C0, (97, 99, 92, 94)], "limit", limit=95.0, sl=0.02)
    assert [(o.bar, o.reason, round(o.price, 6)) for o in res.orders] == [
        (1, "entry", 95.0), (1, "stop_loss", round(95.0 * 0.98 * (1 - SLIP), 6))]
    # the same bar's high above the 1 % target does not take profit (the high may have come first)
    held = run([C0, (97, 99, 94, 96)], "limit", limit=95.0, tp=0.01)
    assert [o.reason for o in held.orders] == ["entry"]


@pytest.mark.parametrize(("kind", "values", "message"), [
    ("limit", {"limit": 101.0}, "buy limit on the wrong side of the close"),
    ("stop", {"stop": 99.0}, "buy stop on the wrong side of the close"),
    ("limit", {"limit": 95.0, "tif": 0}, "a time in force of 0 bars"),
    ("stop_limit", {"stop": 105.0}, "a stop_limit order without a limit price"),
    ("stop_limit", {"stop": 105.0, "limit": 104.0}, "limit is on the wrong side of its trigger"),
    ("limit", {"limit": 99.0, "short": True}, "sell limit on the wrong side of the close"),
])
def test_bad_entry_orders_are_refused(kind: str, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run([C0, (100, 101, 99, 100)], kind, **values)


# ---------------------------------------------------------------- the engine and the sweep
def _pullback(bars: pd.DataFrame, p: dict) -> Any:
    """After a fast/slow SMA cross up, buy a pullback: a limit `offset` below the close, resting
    `tif` bars (or a breakout stop `offset` above it, with order=stop); out on the cross down."""
    from workbench.strategies import Signals
    from workbench.strategies import indicators as ind

    c = bars["close"].to_numpy()
    fast, slow = ind.sma(c, int(p["fast"])), ind.sma(c, int(p["slow"]))
    with np.errstate(invalid="ignore"):
        up = (fast > slow) & ~(np.roll(fast, 1) > np.roll(slow, 1))
        down = (fast < slow) & ~(np.roll(fast, 1) < np.roll(slow, 1))
    kind = ["market", "limit", "stop"][int(p["order"])]
    offset = float(p["offset"])
    price = c * (1 - offset) if kind == "limit" else c * (1 + offset)
    return Signals(up, down, order_type=kind, limit_price=price if kind == "limit" else None,
                   stop_price=price if kind == "stop" else None, time_in_force=int(p["tif"]))


def _pullback_strategy() -> Any:
    from workbench.strategies.base import ParamSpace, Strategy, float_param, int_param

    return Strategy("pullback", ParamSpace.of(
        int_param("fast", 10, 5, 20, step=5), int_param("slow", 40, 30, 60, step=10),
        int_param("order", 1, 0, 2), float_param("offset", 0.01, 0.002, 0.03, step=0.004),
        int_param("tif", 3, 1, 10)), _pullback, warmup=lambda p: int(p["slow"]) + 1)


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    from workbench.data.sources.synthetic import SyntheticSource

    bars = SyntheticSource(seed=5).bars("BTC/USDT", "1h", pd.Timestamp("2025-01-01", tz="UTC"),
                                        pd.Timestamp("2025-04-01", tz="UTC")).set_index("ts")
    bars.attrs["timeframe"] = "1h"
    return bars


def test_the_engine_fills_limit_and_stop_entries_as_the_reference_does(hourly: pd.DataFrame) -> None:
    from workbench.backtest.engine import Costs, backtest

    strat = _pullback_strategy()
    for order in (1, 2):
        params = {"order": order, "offset": 0.006, "tif": 4}
        res = backtest(strat, hourly, params, costs=Costs(fees=0.001, slippage=0.0005))
        sig = {k: np.asarray(v) for k, v in strat.signals(hourly, params).arrays(len(hourly)).items()}
        sig["order_type"] = np.array(["market", "limit", "stop"])[sig["order_type"].astype(int)]
        expected = ref.simulate({"X": hourly}, {"X": sig}, ref.Settings(
            fees=0.001, slippage=0.0005, fraction=1.0, periods_per_year=8760))
        got = res.orders
        assert len(got) == len(expected.orders) > 4
        entries = got[got["reason"] == "entry"]
        want = [o for o in expected.orders if o.reason == "entry"]
        np.testing.assert_allclose(entries["price"].to_numpy(), [o.price for o in want], rtol=1e-12)
        closes = hourly["close"].reindex(entries["time"]).to_numpy()
        assert not np.allclose(entries["price"].to_numpy(), closes)  # filled at their levels, not the bar


@pytest.mark.parametrize("costs", ["fees=0.001", "fees=0.001,volume_cap=0.002,limit_fill=touch",
                                   "fees=0.001,funding=true"])
def test_sweep_rows_equal_backtests_for_limit_and_stop_entries(hourly: pd.DataFrame, costs: str) -> None:
    from workbench.backtest.engine import Costs, backtest
    from workbench.backtest.sweep import sweep

    strat = _pullback_strategy()
    cost = Costs.parse(costs)
    if cost.funding:  # a perpetual: an event every 8 hours
        hourly = hourly.assign(funding_rate=np.where(hourly.index.hour % 8 == 0, 0.0004, 0.0))
    result = sweep(strat, hourly, {"order": [0, 1, 2], "tif": [1, 5]}, fixed={"offset": 0.006}, costs=cost)
    assert len(result.table) == 6
    returns = {}
    for _, row in result.table.iterrows():
        p = {k: row[k].item() if hasattr(row[k], "item") else row[k]
             for k in ("fast", "slow", "order", "offset", "tif")}
        bt = backtest(strat, hourly, p, costs=cost)
        if cost.funding:
            assert bt.charges["funding"] > 0, p
        if cost.volume_cap and p["order"] == 1 and p["tif"] > 1:  # limits: remainders filled later
            assert (bt.orders["reason"] == "entry").sum() > len(bt.trades), p
        assert row["total_return"] == pytest.approx(bt.metrics["total_return"], rel=1e-9, abs=1e-12), p
        assert row["n_trades"] == bt.metrics["n_trades"], p
        returns[(p["order"], p["tif"])] = bt.metrics["total_return"]
    assert len(set(returns.values())) > 3  # the order type and its time in force change the result


def test_bad_entry_orders_are_one_line_in_the_engine(hourly: pd.DataFrame) -> None:
    from workbench.backtest.engine import simulate
    from workbench.errors import DataError
    from workbench.strategies import Signals

    n = len(hourly)
    up = np.zeros(n, dtype=bool)
    up[100] = True
    close = hourly["close"].to_numpy()
    cases = [
        (Signals(up, order_type="limit", limit_price=close * 1.01),
         "a limit entry on bar 100 with a limit on the wrong side of the signal bar's close"),
        (Signals(up, order_type="stop"), "a stop entry on bar 100 without its stop_price"),
        (Signals(up, order_type="stop_limit", stop_price=close * 1.01, limit_price=close * 1.005),
         "whose limit is on the wrong side of its stop"),
        (Signals(up, order_type="limit", limit_price=close * 0.99, time_in_force=0),
         "time_in_force must be a whole number of bars, at least 1"),
        (Signals(up, order_type="limt"), "unknown order type 'limt' .did you mean 'limit'"),
    ]
    for sig, message in cases:
        with pytest.raises(DataError, match=message) as err:
            simulate(hourly, sig)
        assert "\n" not in str(err.value)


def test_a_volume_capped_limit_rests_its_remainder_and_fills_it_later() -> None:
    """Partial fill carried over (SEMANTICS.md "Volume cap"): bar 1's low trades through the buy limit
    at 99 but its volume lets 300 of the 500 fill; bar 2 never reaches 99 (the rest waits); bar 3 gaps
    to 98.5 at the open and the remaining 200 fill there (capped at 0.5 x 600 = 300: all of it)."""
    from workbench.backtest import Costs, Sizing, simulate
    from workbench.strategies import Signals

    index = pd.date_range("2025-01-01", periods=6, freq="1D", tz="UTC", name="ts")
    bars = pd.DataFrame({"open": [100.0, 100.0, 100.0, 98.5, 99.0, 99.0],
                         "high": [100.5, 100.5, 100.5, 99.0, 99.5, 99.5],
                         "low": [99.5, 98.0, 99.5, 98.0, 98.5, 98.5],
                         "close": [100.0, 100.0, 100.0, 98.5, 99.0, 99.0],
                         "volume": [1_000.0, 600.0, 1_000.0, 600.0, 1_000.0, 1_000.0]}, index=index)
    long = np.zeros(6, dtype=bool)
    long[0] = True
    no = np.zeros(6, dtype=bool)
    sig = {"long_entries": long, "long_exits": no, "short_entries": no, "short_exits": no,
           "stop_loss": np.full(6, NAN), "take_profit": np.full(6, NAN),
           "trailing_stop": np.full(6, NAN), "order_type": np.array(["limit"] * 6),
           "limit_price": np.full(6, 99.0), "stop_price": np.full(6, NAN), "time_in_force": np.full(6, 4)}
    settings = ref.Settings(fraction=0.495, volume_cap=0.5)  # 0.495 x 100,000 / 99 = 500 units
    expected = ref.simulate({"X": bars}, {"X": sig}, settings)
    assert [(o.bar, o.size, o.price) for o in expected.orders] == [(1, 300.0, 99.0), (3, 200.0, 98.5)]
    [trade] = expected.trades
    assert trade.size == 500.0 and trade.entry_price == pytest.approx((300 * 99.0 + 200 * 98.5) / 500)
    codes = {"market": 0, "limit": 1, "stop": 2, "stop_limit": 3}
    res = simulate(bars, Signals(long, order_type=np.array([codes[k] for k in sig["order_type"]]),
                                 limit_price=sig["limit_price"], time_in_force=sig["time_in_force"]),
                   costs=Costs(fees=0.0, slippage=0.0, volume_cap=0.5), sizing=Sizing(fraction=0.495),
                   periods_per_year=365)
    assert res.orders[["size", "price"]].values.tolist() == [[300.0, 99.0], [200.0, 98.5]]
    assert res.trades["size"].tolist() == [500.0]
    assert res.trades["entry_price"].iloc[0] == pytest.approx(trade.entry_price)
    # without the cap it all fills on bar 1; with a time in force of 2 the rest expires after bar 2
    whole = ref.simulate({"X": bars}, {"X": sig}, ref.Settings(fraction=0.495))
    assert [(o.bar, o.size) for o in whole.orders] == [(1, 500.0)]
    short_lived = {**sig, "time_in_force": np.full(6, 2)}
    assert [(o.bar, o.size) for o in ref.simulate({"X": bars}, {"X": short_lived}, settings).orders
            ] == [(1, 300.0)]


def test_sweep_rows_equal_backtests_across_chunks_with_per_bar_limit_prices(hourly: pd.DataFrame) -> None:
    """Later chunks write their per-bar limit prices straight into the buffers an earlier chunk left:
    every row, from every chunk, is still its own backtest."""
    from workbench.backtest.engine import Costs, backtest
    from workbench.backtest.sweep import sweep

    costs = Costs(fees=0.001, volume_cap=0.004)
    grid = {"fast": [5, 10, 15, 20], "slow": [30, 40, 50, 60], "offset": [0.002, 0.006], "tif": [2, 5]}
    fixed = {"order": "limit"}
    result = sweep("sma_pullback", hourly, grid, fixed=fixed, costs=costs, memory_mb=0.05)
    assert result.timings["chunk"] < len(result.table) // 3  # several chunks
    table = result.table.reset_index(drop=True)
    for i in range(0, len(table), 7):
        row = table.iloc[i]
        p = {k: row[k].item() if hasattr(row[k], "item") else row[k]
             for k in ("fast", "slow", "offset", "tif")}
        bt = backtest("sma_pullback", hourly, {**p, **fixed}, costs=costs)
        assert row["total_return"] == pytest.approx(bt.metrics["total_return"], rel=1e-9, abs=1e-12), p
        assert row["n_trades"] == bt.metrics["n_trades"], p
