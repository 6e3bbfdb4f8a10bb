"""Reports of target-weight books (`workbench.backtest.holdings` and the portfolio figures): the weights
held equal the reference simulator's positions and a hand table, a rebalance without drift holds its
targets less the costs, turnover and costs per rebalance equal a hand computation (at the open, with a
closed market marked at its last close), risk contributions equal the Euler split of a hand-made
covariance and a finite-difference derivative of the variance; the figures carry those numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from reference_sim import Settings
from reference_weights import simulate_weights as reference
from test_rebalance import _frames  # (random universes, mixed calendars on request)

from workbench.backtest import Costs, Lot
from workbench.backtest.holdings import (
    REBALANCE_COLUMNS,
    book_benchmark,
    held_weights,
    metrics_table,
    rebalance_metrics,
    rebalance_risk,
    rebalance_table,
    risk_contributions,
)
from workbench.backtest.plots import risk_contributions_figure, turnover_figure, weights_figure
from workbench.backtest.rebalance import simulate_weights
from workbench.errors import ConfigError, DataError

NAN = math.nan


def _hand_frames(drop_b_last: bool = False) -> dict[str, pd.DataFrame]:
    idx = pd.date_range("2025-01-06", periods=3, freq="D", tz="UTC")
    a = pd.DataFrame({"open": [10.0, 10.0, 12.0], "close": [10.0, 11.0, 12.0]}, index=idx)
    b = pd.DataFrame({"open": [20.0, 20.0, 18.0], "close": [20.0, 19.0, 18.0]}, index=idx)
    for f in (a, b):
        f["high"], f["low"] = f[["open", "close"]].max(axis=1), f[["open", "close"]].min(axis=1)
    return {"A": a, "B": b.iloc[:2] if drop_b_last else b}


# ----------------------------------------------------------------------------- weights held


@pytest.mark.parametrize("seed", range(12))
def test_weights_held_equal_the_reference_simulators_positions(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    m = int(rng.integers(2, 5))
    frames = _frames(rng, int(rng.integers(20, 50)), m, mixed=bool(seed % 2))
    shorts = seed % 3 == 0
    weights = {s: [rng.uniform(-1 if shorts else 0, 1) / (1.2 * m) if rng.random() < 0.3 else NAN
                   for _ in range(len(f))] for s, f in frames.items()}
    fill = ["next_open", "close"][seed % 2 == 0]
    settings = Settings(init_cash=10_000.0, fees=0.001, slippage=0.0005, fill=fill, lot=0.1)
    want = reference(frames, weights, settings)
    got = simulate_weights(frames, weights, costs=Costs(fees=0.001, slippage=0.0005), fill=fill,
                           init_cash=10_000.0, lots=Lot(step=0.1))
    closes = pd.DataFrame({s: f["close"] for s, f in frames.items()}).reindex(want.index).ffill()
    value = pd.Series(want.value, index=want.index)
    pos = pd.DataFrame(want.positions, index=want.index).reindex(columns=list(frames)).fillna(0.0)
    expected = (pos * closes.fillna(0.0)).div(value, axis=0)
    pd.testing.assert_frame_equal(held_weights(got, frames), expected, check_names=False, check_freq=False,
                                  rtol=1e-8, atol=1e-10)


def test_weights_held_by_hand() -> None:
    """0.4 / 0.4 at the first close, filled at the next open (fees 0.1%, slippage 1%)."""
    frames = _hand_frames()
    res = simulate_weights(frames, {"A": [0.4, NAN, NAN], "B": [0.4, NAN, NAN]},
                           costs=Costs(fees=0.001, slippage=0.01), init_cash=1000.0)
    cash = 1000.0 - 40 * 10.1 * 1.001 - 20 * 20.2 * 1.001  # 40 A at 10.1, 20 B at 20.2
    v1, v2 = cash + 40 * 11 + 20 * 19, cash + 40 * 12 + 20 * 18
    expected = pd.DataFrame({"A": [0.0, 40 * 11 / v1, 40 * 12 / v2], "B": [0.0, 20 * 19 / v1, 20 * 18 / v2]},
                            index=frames["A"].index)
    pd.testing.assert_frame_equal(held_weights(res, frames), expected, check_names=False, rtol=1e-12)


@pytest.mark.parametrize("lots", [None, Lot(step=1.0)])
def test_a_rebalance_without_drift_holds_its_targets_less_the_costs(lots: Lot | None) -> None:
    """With `close` fills the weights at a rebalance bar's close are the ones just traded to: the targets,
    within the costs (sized before them, paid out of the equity) and one lot's value."""
    rng = np.random.default_rng(3)
    frames = _frames(rng, 40, 4, mixed=False)
    targets = {"S0": 0.1, "S1": 0.4, "S2": 0.0, "S3": 0.3}
    weights = {s: np.where(np.isin(np.arange(40), [5, 20]), targets[s] + (0.1 if s == "S2" else 0.0)
                           * (np.arange(40) == 5), NAN) for s in frames}
    res = simulate_weights(frames, weights, costs=Costs(fees=0.001, slippage=0.001), fill="close",
                           init_cash=100_000.0, lots=lots)
    held = held_weights(res, frames).iloc[20]
    lot_value = max(f["close"].iloc[20] for f in frames.values()) / float(res.equity.iloc[20])
    for s, t in targets.items():
        assert abs(held[s] - t) <= 0.003 + (lot_value if lots else 0.0), (s, held[s], t)
    assert held["S2"] == 0.0  # sold out entirely


# ----------------------------------------------------------------------------- turnover and costs


def test_turnover_and_costs_per_rebalance_by_hand() -> None:
    frames = _hand_frames()
    res = simulate_weights(frames, {"A": [0.4, 0.2, NAN], "B": [0.4, 0.6, NAN]},
                           costs=Costs(fees=0.001, slippage=0.01), init_cash=1000.0)
    table = rebalance_table(res, frames)
    assert list(table.columns) == REBALANCE_COLUMNS
    cash = 1000.0 - 808 * 1.001
    e2 = cash + 40 * 12 + 20 * 18  # before trading at bar 2's open (A opened at 12, not its close of 11)
    sell_a, buy_b = 40 - 0.2 * e2 / 12, 0.6 * e2 / 18 - 20
    traded2 = sell_a * 11.88 + buy_b * 18.18
    expected = pd.DataFrame({
        "time": frames["A"].index[1:], "orders": [2, 2], "traded": [808.0, traded2],
        "equity": [1000.0, e2], "rebalance_turnover": [0.808, traded2 / e2],
        "fees": [0.808, traded2 * 0.001],
        "slippage": [40 * 0.1 + 20 * 0.2, sell_a * 0.12 + buy_b * 0.18],
    })
    expected["costs"] = expected["fees"] + expected["slippage"]
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-10)
    assert table["fees"].sum() == pytest.approx(res.orders["fees"].sum())


def test_a_closed_market_is_marked_at_its_last_close_in_the_equity_before_trading() -> None:
    frames = _hand_frames(drop_b_last=True)  # B has no bar 2: A rebalances alone at its open
    res = simulate_weights(frames, {"A": [0.4, 0.2, NAN], "B": [0.4, NAN]},
                           costs=Costs(fees=0.001, slippage=0.01), init_cash=1000.0)
    e2 = 1000.0 - 808 * 1.001 + 40 * 12 + 20 * 19  # B at its close of bar 1
    row = rebalance_table(res, frames).iloc[1]
    assert row["orders"] == 1 and row["equity"] == pytest.approx(e2, rel=1e-12)
    assert row["traded"] == pytest.approx((40 - 0.2 * e2 / 12) * 11.88, rel=1e-12)


def test_close_fills_measure_slippage_from_the_close_and_no_orders_is_an_empty_table() -> None:
    frames = _hand_frames()
    res = simulate_weights(frames, {"A": [0.5, NAN, NAN], "B": [NAN, NAN, NAN]},
                           costs=Costs(fees=0.0, slippage=0.02), init_cash=1000.0, fill="close")
    row = rebalance_table(res, frames).iloc[0]
    assert row["time"] == frames["A"].index[0] and row["equity"] == 1000.0
    assert row["slippage"] == pytest.approx(50 * 10 * 0.02) and row["fees"] == 0.0
    idle = simulate_weights(frames, {"A": [NAN] * 3, "B": [NAN] * 3})
    empty = rebalance_table(idle, frames)
    assert empty.empty and list(empty.columns) == REBALANCE_COLUMNS


def test_the_wrong_bars_are_one_line() -> None:
    frames = _hand_frames()
    res = simulate_weights(frames, {"A": [0.4, NAN, NAN], "B": [0.4, NAN, NAN]})
    with pytest.raises(ConfigError, match=r"the frames hold \['A'\] but the result traded \['A', 'B'\]"):
        held_weights(res, {"A": frames["A"]})
    with pytest.raises(DataError, match="span 2 union bars but the result's equity 3"):
        rebalance_table(res, {s: f.iloc[:2] for s, f in frames.items()})
    with pytest.raises(ConfigError, match="expected a RebalanceResult"):
        held_weights(res.equity, frames)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- risk contributions


def test_risk_contributions_split_a_hand_made_covariance() -> None:
    """Zero sample covariance, variances 4/3 and 16/3, equal weights: 1/5 and 4/5 of the variance."""
    returns = pd.DataFrame({"a": [1.0, -1.0, 1.0, -1.0], "b": [2.0, 2.0, -2.0, -2.0], "c": NAN})
    rc = risk_contributions(returns, {"a": 0.5, "b": 0.5})
    assert rc.to_dict() == pytest.approx({"a": 0.2, "b": 0.8, "c": 0.0})  # c's missing returns unread


def test_risk_contributions_are_the_euler_split_of_the_variance() -> None:
    """RC_i = w_i d(var)/dw_i / (2 var), the derivative by central differences of the portfolio's
    variance (d(w'Σw)/dw = 2Σw)."""
    rng = np.random.default_rng(11)
    returns = pd.DataFrame(rng.normal(0, 0.01, (60, 4)) @ rng.normal(0, 1, (4, 4)), columns=list("wxyz"))
    w = pd.Series([0.4, 0.3, -0.2, 0.5], index=list("wxyz"))

    def var(v: pd.Series) -> float:
        return float((returns @ v).var(ddof=1))

    h = 1e-6
    grad = pd.Series({k: (var(w + h * (w.index == k)) - var(w - h * (w.index == k))) / (2 * h)
                      for k in w.index})
    rc = risk_contributions(returns, w)
    pd.testing.assert_series_equal(rc, w * grad / (2 * var(w)), check_names=False, rtol=1e-6)
    assert rc.sum() == pytest.approx(1.0)


def test_risk_contributions_bad_input_is_one_line() -> None:
    returns = pd.DataFrame({"a": [0.01, 0.02, -0.01], "b": [0.0, 0.01, NAN]})
    with pytest.raises(ConfigError, match=r"weights name \['q'\]"):
        risk_contributions(returns, {"q": 1.0})
    with pytest.raises(DataError, match="returns of b have missing values"):
        risk_contributions(returns, {"a": 0.5, "b": 0.5})
    with pytest.raises(DataError, match="no variance"):
        risk_contributions(returns, {"a": 0.0})
    with pytest.raises(DataError, match="at least 2 rows"):
        risk_contributions(returns.iloc[:1], {"a": 1.0})


def test_rebalance_risk_uses_the_weights_held_and_the_returns_up_to_the_bar() -> None:
    rng = np.random.default_rng(5)
    frames = _frames(rng, 60, 3, mixed=False)
    weights = {s: np.where(np.isin(np.arange(60), [10, 30, 45]), [0.5, 0.3, 0.2][j], NAN)
               for j, s in enumerate(frames)}
    res = simulate_weights(frames, weights, costs=Costs(fees=0.001))
    table = rebalance_risk(res, frames, window=20)
    times = frames["S0"].index
    assert list(table.index) == [times[31], times[46]]  # the fill at bar 11 has only 11 returns before it
    returns = pd.DataFrame({s: f["close"] for s, f in frames.items()}).pct_change().iloc[27:47]
    w = held_weights(res, frames).iloc[46]
    pd.testing.assert_series_equal(table.iloc[1], risk_contributions(returns, w), check_names=False)
    np.testing.assert_allclose(table.sum(axis=1), 1.0)


# ----------------------------------------------------------------------------- metrics and figures


def test_metrics_of_a_book_against_an_equal_weight_buy_and_hold() -> None:
    frames = _hand_frames()
    costs = Costs(fees=0.001, slippage=0.01)
    res = simulate_weights(frames, {"A": [0.4, 0.2, NAN], "B": [0.4, 0.6, NAN]}, costs=costs,
                           init_cash=1000.0)
    qa, qb = 500 / 1.001 / 10.1, 500 / 1.001 / 20.2  # each half bought at bar 1's open, slipped, fees paid
    bench = book_benchmark(res, frames)
    np.testing.assert_allclose(bench.to_numpy(), [1000.0, qa * 11 + qb * 19, qa * 12 + qb * 18], rtol=1e-12)
    m = rebalance_metrics(res, frames, calendar="24/7")
    assert m["total_return"] == pytest.approx(res.equity.iloc[-1] / 1000.0 - 1)
    assert m["benchmark_return"] == pytest.approx(bench.iloc[-1] / 1000.0 - 1)
    assert m["exposure"] == pytest.approx(2 / 3) and "n_trades" not in m and "win_rate" not in m
    idle = simulate_weights(frames, {"A": [NAN] * 3, "B": [NAN] * 3}, init_cash=1000.0)
    table = metrics_table({"book": res, "idle": idle}, frames, calendar="24/7", formatted=False)
    assert list(table.columns) == ["metric", "book", "idle"] and list(table["metric"]) == list(m)
    assert table.set_index("metric").loc["total_return", "idle"] == 0.0


def test_weights_figure_stacks_each_symbol_and_its_shorts() -> None:
    frames = _hand_frames()
    res = simulate_weights(frames, {"A": [0.4, -0.2, NAN], "B": [0.4, 0.6, NAN]}, init_cash=1000.0)
    fig = weights_figure(res, frames)
    held = held_weights(res, frames)
    names = [t.name for t in fig.data]
    assert names == ["A", "A (short)", "B"]
    a_long, a_short, b = fig.data
    np.testing.assert_allclose(a_long.y, held["A"].clip(lower=0) * 100)
    np.testing.assert_allclose(a_short.y, held["A"].clip(upper=0) * 100)
    np.testing.assert_allclose(b.y, held["B"] * 100)
    assert {t.stackgroup for t in fig.data} == {"long", "short"}


def test_weights_figure_downsamples_to_the_last_weights_of_each_bucket() -> None:
    rng = np.random.default_rng(2)
    frames = _frames(rng, 400, 2, mixed=False)
    weights = {s: np.where(np.arange(400) % 7 == 0, 0.45, NAN) for s in frames}
    res = simulate_weights(frames, weights)
    fig = weights_figure(res, frames, max_points=50)
    assert [t.name for t in fig.data] == ["S0", "S1"] and len(fig.data[0].y) == 50
    np.testing.assert_allclose(fig.data[1].y[-1], held_weights(res, frames)["S1"].iloc[-1] * 100)


def test_turnover_figure_carries_the_table() -> None:
    frames = _hand_frames()
    res = simulate_weights(frames, {"A": [0.4, 0.2, NAN], "B": [0.4, 0.6, NAN]},
                           costs=Costs(fees=0.001, slippage=0.01), init_cash=1000.0)
    table = rebalance_table(res, frames)
    fig = turnover_figure(res, frames)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"turnover", "fees", "slippage"}
    np.testing.assert_allclose(by_name["turnover"].y, table["rebalance_turnover"] * 100)
    np.testing.assert_allclose(by_name["slippage"].y, table["slippage"])
    assert fig.layout.barmode == "stack"


def test_risk_contributions_figure_and_its_bad_input() -> None:
    idx = pd.date_range("2025-01-01", periods=3, freq="MS", tz="UTC")
    rc = pd.DataFrame({"A": [0.5, 0.7, 1.1], "B": [0.5, 0.3, -0.1]}, index=idx)
    fig = risk_contributions_figure(rc)
    assert [t.name for t in fig.data] == ["A", "B"] and fig.layout.barmode == "relative"
    np.testing.assert_allclose(fig.data[1].y, [50, 30, -10])
    with pytest.raises(ConfigError, match=r"risk contributions at 2025-02-01 00:00:00\+00:00 sum to 0.9"):
        risk_contributions_figure(rc.assign(B=[0.5, 0.2, -0.1]))
    with pytest.raises(ConfigError, match="indexed by rebalance time"):
        risk_contributions_figure(rc.reset_index(drop=True))
