"""SEMANTICS.md "Target weights and rebalancing" as scenario tables: the reference simulator's orders on
hand-made bars equal the orders worked out by hand from the rules (a first rebalance, a drift threshold
crossed or not, a market closed on the rebalance day, a lot rounding a weight away, a minimum notional,
sells before buys with the buy capped by the cash, targets above the gross allowed)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from reference_sim import Settings
from reference_weights import simulate_weights

NAN = math.nan


def _bars(opens: list[float], closes: list[float] | None = None,
          days: list[int] | None = None) -> pd.DataFrame:
    closes = closes if closes is not None else opens
    days = days if days is not None else list(range(len(opens)))
    idx = pd.DatetimeIndex([pd.Timestamp("2025-01-06", tz="UTC") + pd.Timedelta(days=d) for d in days])
    return pd.DataFrame({"open": opens, "high": [max(o, c) for o, c in zip(opens, closes, strict=True)],
                         "low": [min(o, c) for o, c in zip(opens, closes, strict=True)], "close": closes},
                        index=idx)


def _orders(res) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [(o.bar, o.symbol, o.side, round(o.size, 9), round(o.price, 9), round(o.fees, 9))
            for o in res.orders]


def test_the_first_targets_fill_at_the_next_open() -> None:
    bars = {"A": _bars([100.0] * 4), "B": _bars([50.0] * 4)}
    w = {"A": [0.5, NAN, NAN, NAN], "B": [0.5, NAN, NAN, NAN]}
    res = simulate_weights(bars, w, Settings(init_cash=1000.0))
    assert _orders(res) == [(1, "A", "buy", 5.0, 100.0, 0.0), (1, "B", "buy", 10.0, 50.0, 0.0)]
    assert res.value == [1000.0] * 4
    at_close = simulate_weights(bars, w, Settings(init_cash=1000.0, fill="close"))
    assert [o.bar for o in at_close.orders] == [0, 0]


@pytest.mark.parametrize(("drift", "want"), [
    # A doubles at bar 2's close: weights 1000/1500 and 500/1500, 0.167 from their targets
    (0.1, [(3, "A", "sell", 1.25, 200.0, 0.0), (3, "B", "buy", 2.5, 100.0, 0.0)]),
    (0.2, []),  # within the threshold: nothing
    (None, []),  # no threshold: targets act only on the bars that carry them
])
def test_a_drift_threshold_rebalances_to_the_last_targets(drift: float | None, want: list) -> None:
    bars = {"A": _bars([100.0, 100.0, 100.0, 200.0, 200.0], [100.0, 100.0, 200.0, 200.0, 200.0]),
            "B": _bars([100.0] * 5)}
    w = {"A": [0.5] + [NAN] * 4, "B": [0.5] + [NAN] * 4}
    res = simulate_weights(bars, w, Settings(init_cash=1000.0), drift=drift)
    first = [(1, "A", "buy", 5.0, 100.0, 0.0), (1, "B", "buy", 5.0, 100.0, 0.0)]
    assert _orders(res) == first + want
    assert res.value[2] == 1500.0


def test_a_market_closed_on_the_rebalance_day_trades_at_its_next_bar() -> None:
    # A trades every day; B has no bar on day 1, when the day-0 targets act: A buys at day 1's open, B at
    # day 2's (its next own bar), sized on the equity then
    bars = {"A": _bars([100.0, 100.0, 110.0, 110.0]), "B": _bars([50.0, 50.0, 50.0], days=[0, 2, 3])}
    w = {"A": [0.5, NAN, NAN, NAN], "B": [0.5, NAN, NAN]}
    res = simulate_weights(bars, w, Settings(init_cash=1000.0))
    # day 2: equity = 500 cash + 5 A at 110 = 1050; B's target 0.5 x 1050 / 50 = 10.5 costs 525, more than
    # the 500 of cash: the buy is capped at 500 / 50 = 10 (A is not sold: it has no new target)
    assert _orders(res) == [(1, "A", "buy", 5.0, 100.0, 0.0), (2, "B", "buy", 10.0, 50.0, 0.0)]
    margin = simulate_weights(bars, w, Settings(init_cash=1000.0, max_exposure=1.5))
    assert _orders(margin)[1] == (2, "B", "buy", 10.5, 50.0, 0.0)  # a margin floor lets it through


def test_a_lot_rounds_a_small_weight_away_and_others_toward_zero() -> None:
    bars = {"A": _bars([100.0] * 3), "B": _bars([100.0] * 3)}
    w = {"A": [0.05, NAN, NAN], "B": [0.95, NAN, NAN]}
    res = simulate_weights(bars, w, Settings(init_cash=1000.0, lot=1.0))
    assert _orders(res) == [(1, "B", "buy", 9.0, 100.0, 0.0)]  # A: 0.5 -> 0 lots; B: 9.5 -> 9
    short = simulate_weights(bars, {"A": [-0.27, NAN, NAN], "B": [NAN] * 3},
                             Settings(init_cash=1000.0, lot=1.0))
    assert _orders(short) == [(1, "A", "sell", 2.0, 100.0, 0.0)]  # -2.7 -> -2 (toward zero)


def test_a_trade_under_the_minimum_notional_is_skipped() -> None:
    bars = {"A": _bars([100.0, 100.0, 100.0, 100.0]), "B": _bars([100.0] * 4)}
    w = {"A": [0.5, 0.52, NAN, NAN], "B": [0.5, 0.48, NAN, NAN]}
    res = simulate_weights(bars, w, Settings(init_cash=1000.0, min_notional=25.0))
    # bar 2: A would buy 0.2 (20 of value), B sell 0.2: both under 25, skipped
    assert _orders(res) == [(1, "A", "buy", 5.0, 100.0, 0.0), (1, "B", "buy", 5.0, 100.0, 0.0)]
    res = simulate_weights(bars, w, Settings(init_cash=1000.0, min_notional=10.0))
    assert _orders(res)[2:] == [(2, "B", "sell", 0.2, 100.0, 0.0), (2, "A", "buy", 0.2, 100.0, 0.0)]


def test_sells_fill_first_and_a_buy_is_capped_by_the_cash() -> None:
    bars = {"A": _bars([100.0] * 4), "B": _bars([50.0] * 4)}
    w = {"A": [1.0, 0.0, NAN, NAN], "B": [0.0, 1.0, NAN, NAN]}
    res = simulate_weights(bars, w, Settings(init_cash=1000.0, fees=0.01))
    # bar 1: E = 1000; A's target 10 costs 10 x 100 x 1.01 = 1010 > 1000: capped to 1000 / 1.01 / 100
    a = 1000.0 / 1.01 / 100.0
    # bar 2: E = cash 0 + a x 100; sell all A (fee 1 %), then B's target E / 50 capped by the cash left
    cash = a * 100.0 * 0.99
    b = cash / 1.01 / 50.0
    want = [(1, "A", "buy", round(a, 9), 100.0, round(a * 100.0 * 0.01, 9)),
            (2, "A", "sell", round(a, 9), 100.0, round(a * 100.0 * 0.01, 9)),
            (2, "B", "buy", round(b, 9), 50.0, round(b * 50.0 * 0.01, 9))]
    assert _orders(res) == want


def test_slippage_moves_buys_up_and_sells_down() -> None:
    bars = {"A": _bars([100.0] * 3)}
    res = simulate_weights(bars, {"A": [0.5, -0.5, NAN]}, Settings(init_cash=1000.0, slippage=0.01,
                                                                    max_exposure=1.0))
    buy, sell = res.orders
    assert (buy.side, buy.price, buy.size) == ("buy", 101.0, 5.0)  # sized at the open before slippage
    # bar 2: E = 1000 - 505 + 5 x 100 = 995; target -0.5 x 995 / 100 = -4.975: sell 9.975 at 99
    assert (sell.side, round(sell.price, 9), round(sell.size, 9)) == ("sell", 99.0, 9.975)


def test_targets_above_the_gross_allowed_are_refused() -> None:
    bars = {"A": _bars([100.0] * 3), "B": _bars([100.0] * 3)}
    with pytest.raises(ValueError, match="more than max_exposure"):
        simulate_weights(bars, {"A": [0.7, NAN, NAN], "B": [-0.6, NAN, NAN]}, Settings(init_cash=1000.0))
    ok = simulate_weights(bars, {"A": [0.7, NAN, NAN], "B": [-0.6, NAN, NAN]},
                          Settings(init_cash=1000.0, max_exposure=1.3))
    assert [(o.symbol, o.side, o.size) for o in ok.orders] == [("B", "sell", 6.0), ("A", "buy", 7.0)]
