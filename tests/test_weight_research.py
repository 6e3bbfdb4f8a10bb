"""Weight strategies in the research loop: round trips read from rebalancing orders equal a hand count,
held values equal a walk over the orders, walk-forward optimises a weight strategy (the allocator refitted
in each fold) with out-of-sample windows that start in cash, trade the targets in force at once and end
flat, and the look-ahead check catches a weight strategy that reads the next bar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.backtest import Costs
from workbench.backtest.allocators import Allocator
from workbench.backtest.engine import Execution, Sizing
from workbench.backtest.holdings import held_values
from workbench.backtest.rebalance import simulate_weights
from workbench.backtest.weight_strategies import (
    ALLOCATE,
    WeightEvaluator,
    is_weight_strategy,
    resolve_strategy,
    weight_trades,
)
from workbench.errors import ConfigError
from workbench.optimize.walkforward import walk_forward
from workbench.strategies.base import ParamSpace, int_param
from workbench.strategies.lookahead import check_weight_lookahead
from workbench.strategies.weights import WeightStrategy


def _frames(n: int = 700, m: int = 3, seed: int = 7) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2022-01-03", periods=n, freq="D", tz="UTC")
    out = {}
    for j in range(m):
        close = 100 * np.exp(np.cumsum(rng.normal(0.0003 * (j + 1), 0.01 * (1 + j), n)))
        open_ = close * np.exp(rng.normal(0, 0.002, n))
        out[f"S{j}"] = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.01,
                                     "low": np.minimum(open_, close) * 0.99, "close": close,
                                     "volume": 1e6}, index=idx)
    return out


def _orders(rows: list[tuple[str, str, str, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["time", "symbol", "side", "size", "price", "fees"]).assign(
        time=lambda d: pd.to_datetime(d["time"]))


def test_round_trips_open_at_zero_and_close_back_at_zero_an_order_across_zero_split() -> None:
    o = _orders([("2024-01-01", "A", "buy", 1.0, 10.0, 0.1), ("2024-01-02", "A", "buy", 1.0, 12.0, 0.1),
                 ("2024-01-03", "A", "sell", 3.0, 15.0, 0.3), ("2024-01-04", "A", "sell", 1.0, 14.0, 0.1),
                 ("2024-01-02", "B", "buy", 4.0, 5.0, 0.0), ("2024-01-05", "B", "sell", 4.0, 6.0, 0.0)])
    t = weight_trades(o, {"A": 13.0})
    a = t[t["symbol"] == "A"].reset_index(drop=True)
    # A: long 2 (bought 10 + 12), sold 2 of the 3 at 15 -> pnl 30 - 22 - fees (0.1 + 0.1 + 2/3 of 0.3)
    assert a.loc[0, "direction"] == "long" and a.loc[0, "status"] == "closed"
    assert a.loc[0, "entry_price"] == pytest.approx(11.0) and a.loc[0, "exit_price"] == pytest.approx(15.0)
    assert a.loc[0, "pnl"] == pytest.approx(8.0 - 0.4) and a.loc[0, "return"] == pytest.approx(7.6 / 22)
    # then short 1 at 15 and 1 at 14, open, marked at 13: 29 - 26 - fees 0.1 + 0.1
    assert a.loc[1, "direction"] == "short" and a.loc[1, "status"] == "open"
    assert a.loc[1, "size"] == pytest.approx(2.0) and a.loc[1, "pnl"] == pytest.approx(2.8)
    b = t[t["symbol"] == "B"].iloc[0]
    assert b["status"] == "closed" and b["pnl"] == pytest.approx(4.0)
    assert weight_trades(o.iloc[:0]).empty


def test_held_values_equal_a_walk_over_the_orders() -> None:
    frames = _frames(120)
    targets = {s: np.where(np.arange(120) % 20 == 5, w, np.nan) for s, w in zip(frames, (0.5, 0.3, 0.2),
                                                                                 strict=True)}
    res = simulate_weights(frames, targets, costs=Costs(fees=0.001))
    got = held_values(res, frames)
    qty = dict.fromkeys(frames, 0.0)
    by_time = res.orders.groupby("time")
    for i, t in enumerate(res.equity.index):
        if t in by_time.groups:
            for _, o in by_time.get_group(t).iterrows():
                qty[o["symbol"]] += o["size"] if o["side"] == "buy" else -o["size"]
        for s, f in frames.items():
            assert got.iloc[i][s] == pytest.approx(qty[s] * f["close"].iloc[i], rel=1e-12, abs=1e-9)
    # the held values and the cash left make the equity
    cash = 100_000 - (np.where(res.orders["side"] == "buy", 1, -1) * res.orders["size"] * res.orders["price"]
                      ).sum() - res.orders["fees"].sum()
    assert got.iloc[-1].sum() + cash == pytest.approx(res.equity.iloc[-1], rel=1e-12)


def test_names_resolve_to_weight_or_signal_strategies() -> None:
    assert resolve_strategy("allocate") is ALLOCATE and is_weight_strategy("xs_momentum")
    assert not is_weight_strategy("sma_cross") and resolve_strategy("sma_cross").name == "sma_cross"


def test_a_weight_strategy_refuses_settings_it_would_ignore() -> None:
    frames = _frames(100)
    with pytest.raises(ConfigError, match="sizing rule"):
        WeightEvaluator(ALLOCATE, frames, execution=Execution(sizing=Sizing(kind="volatility",
                                                                            target_vol=0.2)),
                        periods_per_year=252)
    with pytest.raises(ConfigError, match="direction=long"):
        WeightEvaluator(ALLOCATE, frames, execution=Execution(direction="long"), periods_per_year=252)


def test_walk_forward_refits_the_allocator_per_fold_out_of_sample_windows_start_in_cash_and_end_flat(
        tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    frames = _frames(700)
    res = walk_forward("allocate", frames, folds=2, n_trials=4, seed=3, save=False,
                       fixed={"window": 63, "every": "monthly"}, costs=Costs(fees=0.0005))
    assert res.settings["portfolio"] is True
    assert res.folds["n_feasible"].min() > 0
    for _, row in res.folds.iterrows():
        k = int(row["fold"])
        window = res.oos_equity.loc[row["test_start"]:row["test_end"]]
        trades = res.oos_trades[res.oos_trades["fold"] == k]
        # flat at the end: every round trip of the window is closed
        assert len(trades) and (trades["status"] == "closed").all()
        # the targets in force when the window opens are traded at its first bar (its open)
        assert res.settings["fill"] == "next_open" and trades["entry_time"].min() == window.index[0]
        # the first target equals the allocator fitted on the 63 returns before the window (its own fit)
        closes = pd.DataFrame({s: f["close"] for s, f in frames.items()})
        rets = closes.pct_change()
        first_bar = closes.index.get_loc(window.index[0])
        month_starts = [i for i in range(1, first_bar) if closes.index[i].month != closes.index[i - 1].month]
        fit_bar = month_starts[-1]
        want = Allocator(method=str(row["param_method"]), window=63).weights(
            rets.iloc[fit_bar - 62:fit_bar + 1])
        # the window opens in cash and buys, at its first open, every symbol the fit weights
        first = trades[trades["entry_time"] == window.index[0]]
        assert sorted(first["symbol"]) == sorted(want.index[want > 1e-9])



def _peeking(closes: pd.DataFrame, p: dict) -> pd.DataFrame:
    up = (closes.shift(-1) > closes).astype(float)  # tomorrow's close: the future
    return up.div(up.sum(axis=1).replace(0.0, np.nan), axis=0).fillna(0.0)


def test_the_look_ahead_check_passes_the_built_ins_and_catches_a_peek() -> None:
    frames = _frames(260)
    for name, params in (("xs_momentum", {"lookback": 21}), ("low_vol", {"lookback": 21}),
                         ("allocate", {"method": "hrp", "window": 42, "every": "weekly"})):
        rep = check_weight_lookahead(resolve_strategy(name), frames, params, cuts=3)
        assert rep.ok, rep.violations
    peek = WeightStrategy("peek", ParamSpace.of(int_param("x", 1, 1, 2)), _peeking)
    rep = check_weight_lookahead(peek, frames, {}, cuts=3)
    assert not rep.ok and rep.leaking[0].startswith("weights.")


def test_a_strategy_picks_and_an_allocator_sizes_its_picks() -> None:
    frames = _frames(400, 4)
    strat = resolve_strategy("xs_momentum+risk_parity")
    assert strat.name == "xs_momentum+risk_parity" and "alloc_window" in strat.space.names
    p = {"lookback": 63, "top": 2, "every": "monthly", "alloc_window": 42}
    targets = pd.DataFrame(strat.targets(frames, p))
    closes = pd.DataFrame({s: f["close"] for s, f in frames.items()})
    rets = closes.pct_change()
    rows = targets.dropna(how="all")
    assert len(rows) >= 8
    for t, row in rows.iterrows():
        b = closes.index.get_loc(t)
        past = closes.iloc[b] / closes.iloc[b - 63] - 1  # the top 2 by trailing return, by hand
        top = sorted(past.sort_values(ascending=False).index[:2])
        assert sorted(row.index[row > 0]) == top
        want = Allocator(method="risk_parity", window=42).weights(rets[top].iloc[b - 41:b + 1])
        # (within the convex solver's tolerance: the same numbers in another memory layout move its
        # last iterations by 1e-7)
        np.testing.assert_allclose(row[top].to_numpy(), want.to_numpy(), rtol=1e-5)
    with pytest.raises(ConfigError, match="unknown allocator 'nope'"):
        resolve_strategy("xs_momentum+nope")
    with pytest.raises(ConfigError, match="unknown weight strategy 'sma_cross'"):
        resolve_strategy("sma_cross+hrp")


def test_fits_in_processes_give_the_targets_fitted_one_after_another() -> None:
    from workbench.backtest.portfolio_risk import RiskLimits
    from workbench.backtest.rebalance import allocate

    frames = _frames(500, 4)
    for alloc, risk in ((Allocator(method="hrp", window=63), None),
                        (Allocator(method="risk_parity", window=63), RiskLimits(vol_target=0.1))):
        one = allocate(frames, alloc, "monthly", risk=risk)
        seen: list[int] = []
        two = allocate(frames, alloc, "monthly", risk=risk, workers=2,
                       progress=lambda done, total, seen=seen: seen.append(done))
        assert seen == list(range(1, len(one.report) + 1))
        for s in frames:
            pd.testing.assert_series_equal(one.targets[s], two.targets[s], rtol=0, atol=0)
        pd.testing.assert_frame_equal(one.report, two.report)
        pd.testing.assert_frame_equal(one.contributions, two.contributions)
    with pytest.raises(ConfigError, match="cannot run in parallel"):
        allocate(frames, Allocator(method="mean_variance", window=63, max_turnover=0.5), workers=2)
    with pytest.raises(ConfigError, match="workers=0"):
        allocate(frames, Allocator(method="equal", window=63), workers=0)
