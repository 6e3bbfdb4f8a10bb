"""Hand-written candle tables with their trades worked out by hand (freqtrade style).

Each scenario is a few (open, high, low, close) rows, the signals, and the expected orders and
trades with their prices written out. Every scenario runs on the engine and on the independent
reference simulator (tests/reference_sim.py), so the reference is checked by hand as well.
Bad-input scenarios run on the engine only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import reference_sim as ref

from workbench.errors import ConfigError, DataError

IMPLS = ["engine", "reference"]

# Bars 0..7 of a calm up-move: no stop below 95 and no target above 107 is touched by accident.
CALM = [
    # open   high   low    close
    (100.0, 101.0, 99.0, 100.0),  # 0
    (100.0, 102.0, 99.0, 101.0),  # 1
    (102.0, 104.0, 101.0, 103.0),  # 2
    (103.0, 105.0, 102.0, 104.0),  # 3
    (104.0, 106.0, 103.0, 105.0),  # 4
    (105.0, 106.0, 104.0, 105.0),  # 5
    (105.0, 107.0, 104.0, 106.0),  # 6
    (106.0, 107.0, 105.0, 106.0),  # 7
]


def frame(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=len(rows), freq="1D", tz="UTC")
    out = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index)
    out["volume"] = 1000.0
    return out


def signals(n: int, le=(), lx=(), se=(), sx=(), sl=math.nan, tp=math.nan, tsl=math.nan) -> dict:
    """Signal arrays from lists of bar numbers; stops as one scalar (or per-bar array)."""
    out = {}
    for key, bars in zip(ref.SIGNAL_KEYS, (le, lx, se, sx), strict=True):
        arr = np.zeros(n, dtype=bool)
        arr[list(bars)] = True
        out[key] = arr
    for key, value in zip(ref.STOP_KEYS, (sl, tp, tsl), strict=True):
        out[key] = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
    return out


@dataclass
class Run:
    orders: list[tuple]  # (bar, symbol, side, size, price, fees, reason)
    trades: list[dict]  # symbol direction entry_bar entry_price exit_bar exit_price size pnl exit_reason
    equity: list[float]
    benchmark: list[float]


def run(impl: str, bars: dict[str, pd.DataFrame] | pd.DataFrame, sigs: dict, **settings) -> Run:
    if isinstance(bars, pd.DataFrame):
        bars, sigs = {"X": bars}, {"X": sigs}
    settings.setdefault("init_cash", 10_000.0)
    settings.setdefault("fraction", 1.0)
    s = ref.Settings(**settings)
    if impl == "reference":
        res = ref.simulate(bars, sigs, s)
        trades = [dict(symbol=t.symbol, direction=t.direction, entry_bar=t.entry_bar,
                       entry_price=t.entry_price, exit_bar=t.exit_bar, exit_price=t.exit_price,
                       size=t.size, pnl=t.pnl, exit_reason=t.exit_reason) for t in res.trades]
        orders = [(o.bar, o.symbol, o.side, o.size, o.price, o.fees, o.reason) for o in res.orders]
        return Run(orders, trades, res.value, res.benchmark)

    from workbench.backtest import Costs, Lot, Sizing, simulate
    from workbench.strategies import Signals

    res = simulate(
        bars, {k: Signals(**v) for k, v in sigs.items()},
        costs=Costs(fees=s.fees, slippage=s.slippage, slippage_vol=s.slippage_vol, vol_window=s.vol_window,
                    margin_rate=s.margin_rate),
        lots=Lot(step=s.lot, min_qty=s.min_qty, min_notional=s.min_notional),
        fill=s.fill,
        sizing=Sizing(kind=s.sizing, fraction=s.fraction, risk=s.risk, target_vol=s.target_vol,
                      atr_window=s.atr_window),
        direction=s.direction, init_cash=s.init_cash, max_exposure=s.max_exposure,
        periods_per_year=s.periods_per_year,
    )
    index = next(iter(bars.values())).index

    def bar(t) -> int | None:
        return None if pd.isna(t) else int(index.get_loc(pd.Timestamp(t)))

    orders = [(bar(r.time), r.symbol, r.side, r.size, r.price, r.fees, r.reason)
              for r in res.orders.itertuples()]
    trades = []
    for r in res.trades.sort_values("entry_time", kind="stable").to_dict("records"):
        is_open = r["status"] == "open"
        trades.append(dict(symbol=r["symbol"], direction=r["direction"], entry_bar=bar(r["entry_time"]),
                           entry_price=r["entry_price"], exit_bar=None if is_open else bar(r["exit_time"]),
                           exit_price=None if is_open else r["exit_price"], size=r["size"],
                           pnl=None if is_open else r["pnl"], exit_reason=r["exit_reason"]))
    return Run(orders, trades, res.equity.astype(float).tolist(), res.benchmark.astype(float).tolist())


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-9)


def check_orders(got: list[tuple], want: list[tuple]) -> None:
    """Compare orders (bar, side, size, price, reason) or (bar, symbol, side, size, price, reason)."""
    assert len(got) == len(want), f"orders: {got}"
    for g, w in zip(got, want, strict=True):
        keep = (0, 2, 3, 4, 6) if len(w) == 5 else (0, 1, 2, 3, 4, 6)
        g = tuple(g[k] for k in keep)
        assert g == tuple(approx(v) if isinstance(v, float) else v for v in w), f"orders: {got}"


def check_trade(t: dict, **want) -> None:
    for key, value in want.items():
        expected = approx(value) if isinstance(value, float) else value
        assert t[key] == expected, f"{key}: {t}"


# ---------------------------------------------------------------- fills


@pytest.mark.parametrize("impl", IMPLS)
def test_next_open_entry_and_exit_fill_at_the_next_bars_open(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[0], lx=[2]))
    # long signal on bar 0 -> buy at open[1] = 100 with all 10 000; exit signal on bar 2 -> open[3] = 103
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (3, "sell", 100.0, 103.0, "exit")])
    assert len(r.trades) == 1
    check_trade(r.trades[0], direction="long", entry_bar=1, entry_price=100.0, exit_bar=3,
                exit_price=103.0, size=100.0, pnl=300.0, exit_reason="signal")
    assert r.equity == [approx(v) for v in [10_000, 10_100, 10_300, 10_300, 10_300, 10_300, 10_300, 10_300]]


@pytest.mark.parametrize("impl", IMPLS)
def test_close_fill_is_an_opt_in_and_fills_at_the_signal_bars_close(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[0], lx=[2]), fill="close")
    check_orders(r.orders, [(0, "buy", 100.0, 100.0, "entry"), (2, "sell", 100.0, 103.0, "exit")])
    check_trade(r.trades[0], entry_bar=0, entry_price=100.0, exit_bar=2, exit_price=103.0, pnl=300.0)
    assert r.equity[:3] == [approx(10_000), approx(10_100), approx(10_300)]


@pytest.mark.parametrize("impl", IMPLS)
def test_entry_signal_on_the_last_bar_never_fills(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[7]))
    assert r.orders == [] and r.trades == []
    assert r.equity == [approx(10_000.0)] * 8
    # with the close fill the last bar's signal does act, at its close, and the trade stays open
    r = run(impl, frame(CALM), signals(8, le=[7]), fill="close")
    check_orders(r.orders, [(7, "buy", 10_000 / 106, 106.0, "entry")])
    check_trade(r.trades[0], exit_bar=None, exit_reason="open")


@pytest.mark.parametrize("impl", IMPLS)
def test_open_trade_at_the_end_is_reported_open(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[3]))
    check_orders(r.orders, [(4, "buy", 10_000 / 104, 104.0, "entry")])
    check_trade(r.trades[0], entry_bar=4, entry_price=104.0, exit_bar=None, exit_reason="open")
    assert r.equity[-1] == approx(10_000 / 104 * 106)


# ---------------------------------------------------------------- stops

STOP_ROWS = [
    (100.0, 101.0, 99.0, 100.0),  # 0 signal
    (100.0, 102.0, 99.0, 101.0),  # 1 entry at the open (100)
]


@pytest.mark.parametrize("impl", IMPLS)
def test_stop_loss_hit_intrabar_exits_at_the_stop_level_with_slippage(impl: str) -> None:
    rows = [*STOP_ROWS, (99.0, 100.0, 94.0, 96.0), (96.0, 97.0, 95.0, 96.0)]
    r = run(impl, frame(rows), signals(4, le=[0], sl=0.05), slippage=0.001)
    entry = 100 * 1.001  # 100.1: the buy pays the slippage
    size = 10_000 / entry
    level = entry * (1 - 0.05)  # 95.095, from the filled entry price
    exit_ = level * (1 - 0.001)  # 94.999905: the sell gives the slippage
    check_orders(r.orders, [(1, "buy", size, entry, "entry"), (2, "sell", size, exit_, "stop_loss")])
    check_trade(r.trades[0], exit_bar=2, exit_price=exit_, exit_reason="stop_loss",
                pnl=(exit_ - entry) * size)
    assert r.equity[-1] == approx(size * exit_)


@pytest.mark.parametrize("impl", IMPLS)
def test_gap_through_the_stop_exits_at_the_open(impl: str) -> None:
    rows = [*STOP_ROWS, (90.0, 92.0, 88.0, 91.0), (91.0, 92.0, 90.0, 91.0)]
    r = run(impl, frame(rows), signals(4, le=[0], sl=0.05))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (2, "sell", 100.0, 90.0, "stop_loss")])
    check_trade(r.trades[0], exit_price=90.0, pnl=-1000.0, exit_reason="stop_loss")


@pytest.mark.parametrize("impl", IMPLS)
def test_take_profit_hit_intrabar_exits_at_the_target(impl: str) -> None:
    rows = [*STOP_ROWS, (102.0, 104.0, 101.0, 103.5), (103.0, 104.0, 102.0, 103.0)]
    r = run(impl, frame(rows), signals(4, le=[0], sl=0.05, tp=0.03))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (2, "sell", 100.0, 103.0, "take_profit")])
    check_trade(r.trades[0], exit_bar=2, exit_price=103.0, pnl=300.0, exit_reason="take_profit")


@pytest.mark.parametrize("impl", IMPLS)
def test_same_bar_touching_both_stop_and_target_takes_the_stop_loss_first(impl: str) -> None:
    rows = [*STOP_ROWS, (100.0, 104.0, 94.0, 103.0), (103.0, 104.0, 102.0, 103.0)]
    r = run(impl, frame(rows), signals(4, le=[0], sl=0.05, tp=0.03))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (2, "sell", 100.0, 95.0, "stop_loss")])
    check_trade(r.trades[0], exit_price=95.0, pnl=-500.0, exit_reason="stop_loss")


@pytest.mark.parametrize("impl", IMPLS)
def test_short_same_bar_touching_both_stop_and_target_takes_the_stop_loss_first(impl: str) -> None:
    rows = [*STOP_ROWS, (100.0, 106.0, 96.0, 99.0), (99.0, 100.0, 98.0, 99.0)]
    r = run(impl, frame(rows), signals(4, se=[0], sl=0.05, tp=0.03))
    check_orders(r.orders, [(1, "sell", 100.0, 100.0, "entry"), (2, "buy", 100.0, 105.0, "stop_loss")])
    check_trade(r.trades[0], direction="short", exit_price=105.0, pnl=-500.0, exit_reason="stop_loss")


@pytest.mark.parametrize("impl", IMPLS)
def test_gap_above_the_take_profit_exits_at_the_open(impl: str) -> None:
    rows = [*STOP_ROWS, (106.0, 107.0, 105.0, 106.0), (106.0, 107.0, 105.0, 106.0)]
    r = run(impl, frame(rows), signals(4, le=[0], sl=0.05, tp=0.03))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (2, "sell", 100.0, 106.0, "take_profit")])
    check_trade(r.trades[0], exit_price=106.0, pnl=600.0, exit_reason="take_profit")


@pytest.mark.parametrize("impl", IMPLS)
def test_trailing_stop_ratchets_with_highs_and_is_not_tightened_by_the_same_bars_high(impl: str) -> None:
    rows = [
        (100.0, 101.0, 99.0, 100.0),  # 0 signal
        (100.0, 102.0, 99.0, 101.0),  # 1 entry at 100: level 95 (peak 100); then peak 102
        (105.0, 110.0, 104.0, 108.0),  # 2 level 102*0.95 = 96.9, low 104 holds; then peak 110
        #                                (with this bar's own high the level would be 104.5 > low 104)
        (107.0, 108.0, 104.0, 105.0),  # 3 level 110*0.95 = 104.5, low 104 -> out at 104.5
        (105.0, 106.0, 104.0, 105.0),  # 4
    ]
    r = run(impl, frame(rows), signals(5, le=[0], tsl=0.05))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (3, "sell", 100.0, 104.5, "trailing_stop")])
    check_trade(r.trades[0], exit_bar=3, exit_price=104.5, pnl=450.0, exit_reason="trailing_stop")


@pytest.mark.parametrize("impl", IMPLS)
def test_fixed_stop_binds_over_a_looser_trailing_stop(impl: str) -> None:
    rows = [*STOP_ROWS, (100.0, 101.0, 97.0, 98.0), (98.0, 99.0, 97.0, 98.0)]
    # fixed 98 vs trailing 100*0.9 = 90 after bar 1 (peak 102 -> 91.8): the fixed level binds
    r = run(impl, frame(rows), signals(4, le=[0], sl=0.02, tsl=0.10))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (2, "sell", 100.0, 98.0, "stop_loss")])


@pytest.mark.parametrize("impl", IMPLS)
def test_fixed_and_trailing_stop_at_the_same_level_report_stop_loss(impl: str) -> None:
    rows = [(100.0, 101.0, 99.0, 100.0), (100.0, 100.0, 99.0, 99.5), (99.0, 99.5, 94.0, 95.0)]
    # the peak never rises above the entry (100): both levels are 95, a tie goes to stop_loss
    r = run(impl, frame(rows), signals(3, le=[0], sl=0.05, tsl=0.05))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (2, "sell", 100.0, 95.0, "stop_loss")])


@pytest.mark.parametrize("impl", IMPLS)
def test_short_trailing_stop_follows_the_lows(impl: str) -> None:
    rows = [
        (100.0, 101.0, 99.0, 100.0),  # 0 signal
        (100.0, 101.0, 96.0, 97.0),  # 1 short at 100: level 105; then trough 96
        (95.0, 96.0, 90.0, 91.0),  # 2 level 96*1.05 = 100.8 holds; then trough 90
        (92.0, 95.0, 91.0, 94.0),  # 3 level 90*1.05 = 94.5, high 95 -> out at 94.5
    ]
    r = run(impl, frame(rows), signals(4, se=[0], tsl=0.05))
    check_orders(r.orders, [(1, "sell", 100.0, 100.0, "entry"), (3, "buy", 100.0, 94.5, "trailing_stop")])
    check_trade(r.trades[0], direction="short", pnl=550.0, exit_reason="trailing_stop")


@pytest.mark.parametrize("impl", IMPLS)
def test_stop_on_the_entry_bar_itself(impl: str) -> None:
    rows = [(100.0, 101.0, 99.0, 100.0), (100.0, 101.0, 97.0, 99.0), (99.0, 100.0, 98.0, 99.0)]
    # entered at bar 1's open (100); the same bar's low 97 reaches the 2 % stop at 98
    r = run(impl, frame(rows), signals(3, le=[0], sl=0.02))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (1, "sell", 100.0, 98.0, "stop_loss")])
    check_trade(r.trades[0], entry_bar=1, exit_bar=1, pnl=-200.0)
    assert r.equity == [approx(10_000), approx(9_800), approx(9_800)]


@pytest.mark.parametrize("impl", IMPLS)
def test_close_fill_entry_bar_is_not_checked_against_its_own_range(impl: str) -> None:
    rows = [(100.0, 101.0, 90.0, 100.0), (100.0, 101.0, 97.0, 99.0), (99.0, 100.0, 98.0, 99.0)]
    # entered at bar 0's close: bar 0's low (90) happened before the entry; bar 1's low 97 hits 98
    r = run(impl, frame(rows), signals(3, le=[0], sl=0.02), fill="close")
    check_orders(r.orders, [(0, "buy", 100.0, 100.0, "entry"), (1, "sell", 100.0, 98.0, "stop_loss")])


@pytest.mark.parametrize("impl", IMPLS)
def test_stopped_symbol_takes_no_further_order_in_that_bar(impl: str) -> None:
    rows = [*STOP_ROWS, (90.0, 92.0, 88.0, 91.0), (91.0, 92.0, 90.0, 91.0)]
    # stopped at bar 2's open by the gap; the short entry of bar 1 (acting at bar 2's open) is dropped
    r = run(impl, frame(rows), signals(4, le=[0], se=[1], sl=0.05))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (2, "sell", 100.0, 90.0, "stop_loss")])


@pytest.mark.parametrize("impl", IMPLS)
def test_stop_levels_come_from_the_signal_bar_of_the_entry(impl: str) -> None:
    rows = [*STOP_ROWS, (100.0, 101.0, 96.5, 98.0), (98.0, 99.0, 94.0, 96.0)]
    sl = np.array([0.04, 0.01, 0.01, 0.01])  # bar 0 (the signal bar) says 4 %: level 96
    r = run(impl, frame(rows), signals(4, le=[0], sl=sl))
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (3, "sell", 100.0, 96.0, "stop_loss")])


# ---------------------------------------------------------------- signals -> orders


@pytest.mark.parametrize("impl", IMPLS)
def test_reversal_long_to_short_on_a_short_entry(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[0], se=[2]))
    # bar 3 open 103: sell the 100 held (exit), then short 10 300 / 103 = 100
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (3, "sell", 100.0, 103.0, "exit"),
                            (3, "sell", 100.0, 103.0, "entry")])
    check_trade(r.trades[0], direction="long", exit_bar=3, pnl=300.0, exit_reason="signal")
    check_trade(r.trades[1], direction="short", entry_bar=3, entry_price=103.0, size=100.0,
                exit_reason="open")
    assert r.equity[4] == approx(10_300 + 100 * 103 - 100 * 105)


@pytest.mark.parametrize("impl", IMPLS)
def test_direction_long_drops_short_signals(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[0], se=[2], sx=[4]), direction="long")
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry")])
    r = run(impl, frame(CALM), signals(8, le=[0], lx=[2], se=[4]), direction="short")
    check_orders(r.orders, [(5, "sell", 10_000 / 105, 105.0, "entry")])


@pytest.mark.parametrize("impl", IMPLS)
def test_conflicting_signals_are_ignored(impl: str) -> None:
    sig = signals(8, le=[0, 1, 3, 5], lx=[0, 5], se=[1], sx=[6])
    # bar 0: long entry + long exit -> nothing; bar 1: long entry + short entry -> nothing;
    # bar 3: long entry -> buy at open[4] = 104; bar 5: long entry + long exit while long -> both ignored
    r = run(impl, frame(CALM), sig)
    check_orders(r.orders, [(4, "buy", 10_000 / 104, 104.0, "entry")])


@pytest.mark.parametrize("impl", IMPLS)
def test_conflict_rules_apply_in_their_listed_order(impl: str) -> None:
    # SEMANTICS.md lists: long entry + long exit, then short entry + short exit, then long + short
    # entry; each rule sees what the previous left (vectorbt's order). Bar 0: long entry + long
    # exit cancel, the short entry stands -> short at open[1]. Bar 3: short entry + short exit
    # cancel, the long entry stands -> reversal at open[4].
    r = run(impl, frame(CALM), signals(8, le=[0, 3], lx=[0], se=[0, 3], sx=[3]))
    check_orders(r.orders, [(1, "sell", 100.0, 100.0, "entry"), (4, "buy", 100.0, 104.0, "exit"),
                            (4, "buy", (10_000 + 100 * 100 - 100 * 104) / 104, 104.0, "entry")])


@pytest.mark.parametrize("impl", IMPLS)
def test_no_pyramiding_and_exits_while_flat_are_ignored(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[1, 2, 3], lx=[0, 5, 6], sx=[4]))
    check_orders(r.orders, [(2, "buy", 10_000 / 102, 102.0, "entry"),
                            (6, "sell", 10_000 / 102, 105.0, "exit")])


# ---------------------------------------------------------------- costs and sizing


@pytest.mark.parametrize("impl", IMPLS)
def test_fees_and_slippage_arithmetic_on_one_trade(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[0], lx=[2]), fees=0.001, slippage=0.0005)
    buy = 100.05  # open[1] = 100 * (1 + 0.0005)
    # 10 000 / 100.05 would cost 10 010 with the 0.1 % fee: capped to what the cash buys
    size = 10_000 / 1.001 / 100.05  # 99.850174812693...
    buy_fee = size * buy * 0.001  # 9.99000999...
    sell = 102.9485  # open[3] = 103 * (1 - 0.0005)
    sell_fee = size * sell * 0.001
    check_orders(r.orders, [(1, "buy", size, buy, "entry"), (3, "sell", size, sell, "exit")])
    assert r.orders[0][5] == approx(buy_fee) and r.orders[1][5] == approx(sell_fee)
    assert buy_fee == pytest.approx(9.99000999, rel=1e-8)
    pnl = (sell - buy) * size - buy_fee - sell_fee
    check_trade(r.trades[0], pnl=pnl)
    assert pnl == pytest.approx(269.1463, abs=1e-4)
    assert r.equity[-1] == approx(size * sell * 0.999) == approx(10_000 + pnl)
    # value while held: the cash left (0) plus size * close
    assert r.equity[1] == approx(size * 101.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_short_fees_and_slippage(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, se=[0], sx=[2]), fees=0.002, slippage=0.001)
    sell = 100 * 0.999
    # shorts are not limited by cash; the fee is reserved: f * E / (P * (1 - slip) * (1 + fees))
    size = 10_000 / (sell * 1.002)
    buy = 103 * 1.001
    check_orders(r.orders, [(1, "sell", size, sell, "entry"), (3, "buy", size, buy, "exit")])
    pnl = (sell - buy) * size - size * sell * 0.002 - size * buy * 0.002
    check_trade(r.trades[0], direction="short", pnl=pnl)
    assert r.equity[1] == approx(10_000 + size * sell * 0.998 - size * 101.0)
    assert r.equity[-1] == approx(10_000 + pnl)


TWO = {
    "A": frame([(100.0, 101.0, 99.0, 100.0), (100.0, 101.0, 99.0, 100.0), (100.0, 101.0, 99.0, 110.0)]),
    "B": frame([(50.0, 51.0, 49.0, 50.0), (50.0, 51.0, 49.0, 50.0), (50.0, 51.0, 49.0, 40.0)]),
}


def two_signals() -> dict:
    return {"A": signals(3, le=[0]), "B": signals(3, le=[0])}


@pytest.mark.parametrize("impl", IMPLS)
def test_two_symbols_share_the_cash_with_half_each(impl: str) -> None:
    r = run(impl, TWO, two_signals(), fraction=0.5)
    # A: 0.5 * 10 000 / 100 = 50; B: E = 5 000 cash + 50 * 100 = 10 000 -> 0.5 * 10 000 / 50 = 100
    check_orders(r.orders, [(1, "A", "buy", 50.0, 100.0, "entry"), (1, "B", "buy", 100.0, 50.0, "entry")])
    assert r.equity == [approx(10_000), approx(10_000), approx(50 * 110 + 100 * 40)]


@pytest.mark.parametrize("impl", IMPLS)
def test_default_fraction_is_one_over_the_number_of_symbols(impl: str) -> None:
    r = run(impl, TWO, two_signals(), fraction=None)
    check_orders(r.orders, [(1, "A", "buy", 50.0, 100.0, "entry"), (1, "B", "buy", 100.0, 50.0, "entry")])


@pytest.mark.parametrize("impl", IMPLS)
def test_max_exposure_caps_each_position(impl: str) -> None:
    r = run(impl, TWO, two_signals(), fraction=None, max_exposure=0.4)
    # f = min(1 / 2 symbols, 0.4): A 4 000 / 100 = 40; B: E = 6 000 + 40 * 100 -> 4 000 / 50 = 80;
    # 2 000 stays cash
    check_orders(r.orders, [(1, "A", "buy", 40.0, 100.0, "entry"), (1, "B", "buy", 80.0, 50.0, "entry")])
    assert r.equity[-1] == approx(2_000 + 40 * 110 + 80 * 40)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_long_buy_cannot_spend_more_than_the_cash(impl: str) -> None:
    r = run(impl, TWO, two_signals(), fraction=0.8)
    # A: 8 000 / 100 = 80, 2 000 left; B wants 0.8 * 10 000 = 8 000 but only 2 000 is there -> 40
    check_orders(r.orders, [(1, "A", "buy", 80.0, 100.0, "entry"), (1, "B", "buy", 40.0, 50.0, "entry")])


@pytest.mark.parametrize("impl", IMPLS)
def test_risk_sizing_quantity_is_risk_times_equity_over_distance_over_fill_price(impl: str) -> None:
    rows = CALM[:4]
    r = run(impl, frame(rows), signals(4, le=[0], sl=0.02), sizing="risk", risk=0.01, slippage=0.001)
    # f = 0.01 / 0.02 = 0.5 -> q = 0.5 * 10 000 / (100 * 1.001)
    check_orders(r.orders, [(1, "buy", 5_000 / 100.1, 100.1, "entry")])
    # no fixed stop: the trailing distance is the risk; 0.01 / 0.04 = 0.25
    r = run(impl, frame(rows), signals(4, le=[0], tsl=0.04), sizing="risk", risk=0.01)
    check_orders(r.orders, [(1, "buy", 2_500 / 100, 100.0, "entry")])
    # a tiny distance is capped by max_exposure (here by the default 1.0 -> all the cash)
    # (bar 1's low 99 then hits that 0.1 % stop at 99.9)
    r = run(impl, frame(rows), signals(4, le=[0], sl=0.001), sizing="risk", risk=0.01)
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry"), (1, "sell", 100.0, 99.9, "stop_loss")])


@pytest.mark.parametrize("impl", IMPLS)
def test_risk_sizing_refuses_an_entry_without_any_stop(impl: str) -> None:
    sl = np.array([math.nan, math.nan, 0.05, math.nan, math.nan, math.nan, math.nan, math.nan])
    r = run(impl, frame(CALM), signals(8, le=[0, 2], tp=0.5, sl=sl), sizing="risk", risk=0.01)
    # bar 0 has only a take-profit -> refused; bar 2 has a 5 % stop -> f = 0.2 at open[3] = 103
    check_orders(r.orders, [(3, "buy", 2_000 / 103, 103.0, "entry")])


@pytest.mark.parametrize("impl", IMPLS)
def test_volatility_sizing_uses_the_signal_bars_atr(impl: str) -> None:
    rows = [
        (100.0, 102.0, 98.0, 100.0),  # TR 4 (high - low on bar 0)
        (100.0, 103.0, 99.0, 102.0),  # TR max(4, 3, 1) = 4
        (102.0, 104.0, 100.0, 102.0),  # TR 4 -> ATR(3) = 4
        (102.0, 103.0, 101.0, 102.0),
        (102.0, 103.0, 101.0, 102.0),
    ]
    # bar 0 and 1: ATR(3) undefined -> no entry; bar 2: f = 0.2 / (4 / 102 * sqrt(252)) = 0.32127...
    f = 0.2 / (4 / 102 * math.sqrt(252))
    r = run(impl, frame(rows), signals(5, le=[0, 1, 2]), sizing="volatility", target_vol=0.2,
            atr_window=3, periods_per_year=252)
    check_orders(r.orders, [(3, "buy", f * 10_000 / 102, 102.0, "entry")])
    assert f == pytest.approx(0.321270, abs=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_slippage_grows_with_the_previous_bars_volatility(impl: str) -> None:
    closes = [100.0, 110.0, 99.0, 99.0, 99.0]
    rows = [(c, c + 1, c - 1, c) for c in closes]
    sigma = abs(math.log(1.1) - math.log(0.9)) / math.sqrt(2)  # std of the 2 returns ending at bar 2
    r = run(impl, frame(rows), signals(5, le=[2]), slippage=0.001, slippage_vol=0.25, vol_window=2)
    fill = 99.0 * (1 + 0.001 + 0.25 * sigma)  # bar 3 uses sigma[2]
    check_orders(r.orders, [(3, "buy", 10_000 / fill, fill, "entry")])


@pytest.mark.parametrize("impl", IMPLS)
def test_benchmark_is_buy_and_hold_from_the_first_actionable_bar(impl: str) -> None:
    r = run(impl, TWO, two_signals(), fees=0.001)
    # 5 000 each at bar 1's open, fees included: A 5 000 / 1.001 / 100, B 5 000 / 1.001 / 50
    qa, qb = 5_000 / 1.001 / 100, 5_000 / 1.001 / 50
    assert r.benchmark == [approx(10_000), approx(qa * 100 + qb * 50), approx(qa * 110 + qb * 40)]
    r = run(impl, TWO, two_signals(), fill="close")
    assert r.benchmark == [approx(10_000), approx(10_000), approx(50 * 110 + 100 * 40)]


@pytest.mark.parametrize("impl", IMPLS)
def test_a_cash_capped_buy_leaves_no_dust_for_the_next_symbol(impl: str) -> None:
    bars = {
        "A": frame([(77.0, 78.0, 76.0, 77.0)] * 5),
        "B": frame([(50.0, 51.0, 49.0, 50.0)] * 5),
    }
    sigs = {"A": signals(5, le=[0], lx=[1]), "B": signals(5, le=[0, 2])}
    r = run(impl, bars, sigs, fees=0.001)
    # A takes everything: 10 000 / 77 would cost 10 010 with the fee -> 10 000 / 1.001 / 77 and the
    # cash is 0 (in floats 10 000 - q * 77 * 1.001 leaves +1.8e-12: that must not buy B dust that
    # would then block B's real entry at bar 3 as pyramiding)
    qa = 10_000 / 1.001 / 77
    cash = qa * 77 * 0.999  # A sold at bar 2's open
    qb = cash / 1.001 / 50
    check_orders(r.orders, [(1, "A", "buy", qa, 77.0, "entry"), (2, "A", "sell", qa, 77.0, "exit"),
                            (3, "B", "buy", qb, 50.0, "entry")])


# ---------------------------------------------------------------- lots, minimums, margin

# a stock that trades in whole shares: entries at 101.3 and 50.55, exit at 97.7
SHARES = [(100.0, 101.0, 99.0, 100.0), (101.3, 102.0, 100.0, 101.0), (101.0, 101.0, 97.0, 98.0),
          (97.7, 98.0, 50.0, 51.0), (50.55, 52.0, 50.0, 51.0), (51.0, 52.0, 50.0, 52.5)]


def _backtesting_py_units(cash: float, price: float, commission: float) -> int:
    """backtesting.py (`_Broker._process_orders`) sizing of its default `size=1 - eps` order:
    `int(margin_available * leverage * size // (adjusted_price + commission(size, price) / size))`,
    with no spread and leverage 1; its commission is `commission * |size| * price`."""
    import sys

    size = 1 - sys.float_info.epsilon
    return int(cash * size // (price + commission * size * price / size))


@pytest.mark.parametrize("impl", IMPLS)
def test_whole_shares_reproduce_backtesting_py_sizing_and_fee_reservation(impl: str) -> None:
    c = 0.002
    r = run(impl, frame(SHARES), signals(6, le=[0, 3], lx=[2]), fees=c, lot=1.0)
    # backtesting.py's rules, worked out independently of both simulators
    q1 = _backtesting_py_units(10_000.0, 101.3, c)
    cash = 10_000.0 - q1 * 101.3 * c + q1 * (97.7 - 101.3) - q1 * 97.7 * c
    q2 = _backtesting_py_units(cash, 50.55, c)
    assert (q1, q2) == (98, 189)
    check_orders(r.orders, [(1, "buy", 98.0, 101.3, "entry"), (3, "sell", 98.0, 97.7, "exit"),
                            (4, "buy", 189.0, 50.55, "entry")])
    cash_end = cash - q2 * 50.55 * (1 + c)
    assert r.equity[-1] == approx(cash_end + q2 * 52.5)


@pytest.mark.parametrize("impl", IMPLS)
def test_lot_step_rounds_down_and_an_entry_below_a_minimum_is_refused(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[0]), lot=0.25)
    # 10 000 / 100 = 100 exactly -> 100; with fees 10 000 / 100.1 = 99.9 -> 99.75
    check_orders(r.orders, [(1, "buy", 100.0, 100.0, "entry")])
    r = run(impl, frame(CALM), signals(8, le=[0]), lot=0.25, fees=0.001)
    check_orders(r.orders, [(1, "buy", 99.75, 100.0, "entry")])
    assert r.equity[1] == approx(10_000 - 99.75 * 100.0 * 1.001 + 99.75 * 101.0)
    r = run(impl, frame(CALM), signals(8, le=[0], lx=[2], se=[4]), fraction=0.5, min_qty=51.0)
    assert r.orders == []  # 50 units wanted, 51 the minimum: every entry refused
    r = run(impl, frame(CALM), signals(8, le=[0]), fraction=0.5, min_notional=5_000.01)
    assert r.orders == []
    r = run(impl, frame(CALM), signals(8, le=[0]), fraction=0.5, min_notional=5_000.0)
    check_orders(r.orders, [(1, "buy", 50.0, 100.0, "entry")])


@pytest.mark.parametrize("impl", IMPLS)
def test_long_margin_borrows_up_to_the_exposure_cap(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[0], lx=[3]), fraction=2.0, max_exposure=2.0)
    # 2 x equity: 20 000 / 100 = 200 units, cash -10 000 (borrowed)
    check_orders(r.orders, [(1, "buy", 200.0, 100.0, "entry"), (4, "sell", 200.0, 104.0, "exit")])
    assert r.equity[2] == approx(-10_000 + 200 * 103.0)
    assert r.equity[-1] == approx(10_000 + 200 * 4.0)
    # the floor is -(max_exposure - 1) * E: a 3x fraction under a 2x cap is an error (engine), and
    # two symbols at 1.5x each borrow only down to -10 000
    r = run(impl, TWO, two_signals(), fraction=1.5, max_exposure=2.0)
    check_orders(r.orders, [(1, "A", "buy", 150.0, 100.0, "entry"), (1, "B", "buy", 100.0, 50.0, "entry")])


@pytest.mark.parametrize("impl", IMPLS)
def test_margin_interest_is_charged_per_bar_on_negative_cash(impl: str) -> None:
    r = run(impl, frame(CALM), signals(8, le=[0], lx=[3]), fraction=2.0, max_exposure=2.0,
            margin_rate=0.1, periods_per_year=10.0)
    # 1 % per bar on the 10 000 borrowed at bar 1's open, charged at the start of bars 2, 3 and 4
    cash = -10_000.0
    for _ in range(3):
        cash *= 1.01
    assert r.equity[2] == approx(-10_000 * 1.01 + 200 * 103.0)
    assert r.equity[-1] == approx(cash + 200 * 104.0)


def test_a_fraction_the_exposure_cap_would_ignore_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"fraction=2 exceeds max_exposure=1.*max_exposure=2"):
        run("engine", frame(CALM), signals(8, le=[0]), fraction=2.0)
    with pytest.raises(ConfigError, match=r"margin_rate=0\.05 has no effect"):
        run("engine", frame(CALM), signals(8, le=[0]), direction="long", margin_rate=0.05)


# ---------------------------------------------------------------- bad input (engine only)


def long_bars(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    rows = [(c, c * 1.01, c * 0.99, c) for c in close]
    return frame(rows)


def test_nan_prices_are_a_data_error() -> None:
    from workbench.backtest import backtest, simulate
    from workbench.strategies import Signals

    bars = long_bars()
    bars.iloc[60, bars.columns.get_loc("close")] = np.nan
    with pytest.raises(DataError, match="NaN"):
        backtest("sma_cross", bars, {"fast": 5, "slow": 20})
    with pytest.raises(DataError):
        simulate(bars, Signals(np.zeros(len(bars), dtype=bool)))


def test_unknown_strategy_name_is_a_config_error_with_a_suggestion() -> None:
    from workbench.backtest import backtest

    with pytest.raises(ConfigError, match="did you mean 'sma_cross'"):
        backtest("sma_crss", long_bars(), {"fast": 5, "slow": 20})


def test_params_out_of_range_are_a_config_error() -> None:
    from workbench.backtest import backtest

    with pytest.raises(ConfigError, match="fast"):
        backtest("sma_cross", long_bars(), {"fast": 1, "slow": 20})
    with pytest.raises(ConfigError, match="fast < slow"):
        backtest("sma_cross", long_bars(), {"fast": 30, "slow": 20})


def test_bars_shorter_than_the_warmup_are_a_data_error() -> None:
    from workbench.backtest import backtest

    with pytest.raises(DataError, match="needs at least"):
        backtest("sma_cross", long_bars(30), {"fast": 5, "slow": 50})


def test_backtest_by_name_matches_simulate_on_the_strategys_signals() -> None:
    from workbench.backtest import Costs, backtest, simulate
    from workbench.strategies import get_strategy

    bars = long_bars(200)
    costs = Costs(fees=0.001, slippage=0.0005)
    res = backtest("sma_cross", bars, {"fast": 5, "slow": 20}, costs=costs)
    sig = get_strategy("sma_cross").signals(bars, {"fast": 5, "slow": 20})
    direct = simulate(bars, sig, costs=costs)
    np.testing.assert_allclose(res.equity.to_numpy(dtype=float), direct.equity.to_numpy(dtype=float),
                               rtol=1e-12)
    assert len(res.orders) > 0
    expected = ref.simulate({"X": bars}, {"X": sig.arrays(len(bars))},
                            ref.Settings(fees=0.001, slippage=0.0005))
    np.testing.assert_allclose(res.equity.to_numpy(dtype=float), expected.value, rtol=1e-9)


def test_lots_parse_from_their_cli_form() -> None:
    """`--lots step=1` for every symbol, or per symbol; every mistake is one clear line."""
    from workbench.backtest import Lot, parse_lots
    from workbench.errors import ConfigError

    assert parse_lots("step=1", ["SPY"]) == Lot(step=1)
    assert parse_lots("SPY:step=1; BTC/USDT:step=0.00001,min_notional=5", ["SPY", "BTC/USDT"]) == {
        "SPY": Lot(step=1), "BTC/USDT": Lot(step=1e-5, min_notional=5)}
    perp = "BTC/USDT:USDT"  # a ccxt perpetual's symbol holds a colon too
    assert parse_lots(f"{perp}:min_qty=0.001", [perp]) == {perp: Lot(min_qty=0.001)}
    for bad, why in (("stp=1", "did you mean 'step'"), ("SPY:step=x", "not a number"),
                     ("QQQ:step=1", "not among the symbols"), ("", "nothing given"),
                     ("step=1,step=2", "given twice"), ("step=-1", ">= 0")):
        with pytest.raises(ConfigError, match=why):
            parse_lots(bad, ["SPY"])
