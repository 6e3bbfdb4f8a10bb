"""The target-weight kernel (`workbench.backtest.rebalance`) against the reference simulator of SEMANTICS.md
"Target weights and rebalancing": random portfolios (mixed calendars, fees, slippage, lots, minimum
notionals, margin, a drift threshold, both fill conventions) give the same orders and equity; bad input
is one line each."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from reference_sim import Settings
from reference_weights import simulate_weights as reference

from workbench.backtest import Costs, Lot
from workbench.backtest.rebalance import simulate_weights
from workbench.errors import ConfigError, DataError


def _frames(rng: np.random.Generator, n: int, m: int, mixed: bool) -> dict[str, pd.DataFrame]:
    idx = pd.date_range("2025-01-01", periods=n, freq="D", tz="UTC")
    out = {}
    for j in range(m):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, n)))
        open_ = close * np.exp(rng.normal(0, 0.01, n))
        df = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.01,
                           "low": np.minimum(open_, close) * 0.99, "close": close}, index=idx)
        if mixed and j % 2 == 1:  # a market with weekends off
            df = df[df.index.day_of_week < 5]
        out[f"S{j}"] = df
    return out


def _weights(rng: np.random.Generator, frames: dict[str, pd.DataFrame], gross: float, shorts: bool,
             every: int) -> dict[str, list[float]]:
    m = len(frames)
    out: dict[str, list[float]] = {}
    raw = {s: [] for s in frames}  # type: ignore[var-annotated]
    for s, df in frames.items():
        for _ in range(len(df)):
            if rng.random() < 1.0 / every:
                w = rng.uniform(-1 if shorts else 0, 1) * gross / m
                raw[s].append(w)
            else:
                raw[s].append(math.nan)
        out[s] = raw[s]
    return out


CASES = range(40)


@pytest.mark.parametrize("seed", CASES)
def test_random_portfolios_equal_the_reference(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    m = int(rng.integers(1, 5))
    frames = _frames(rng, int(rng.integers(20, 60)), m, mixed=bool(rng.random() < 0.5))
    max_exposure = float(rng.choice([1.0, 1.5]))
    shorts = bool(rng.random() < 0.4)
    weights = _weights(rng, frames, max_exposure if not shorts else max_exposure / 1.2, shorts,
                       int(rng.integers(2, 8)))
    fill = str(rng.choice(["next_open", "close"]))
    fees = float(rng.choice([0.0, 0.001]))
    slippage = float(rng.choice([0.0, 0.0005]))
    lot = float(rng.choice([0.0, 0.0, 1.0, 0.1]))
    min_notional = float(rng.choice([0.0, 0.0, 50.0]))
    drift = [None, 0.05, 0.2][int(rng.integers(0, 3))]
    want = reference(frames, weights, Settings(init_cash=10_000.0, fees=fees, slippage=slippage, fill=fill,
                                               max_exposure=max_exposure, lot=lot, min_notional=min_notional),
                     drift=drift)
    got = simulate_weights(frames, weights, costs=Costs(fees=fees, slippage=slippage), fill=fill,
                           init_cash=10_000.0, max_exposure=max_exposure,
                           lots=Lot(step=lot, min_notional=min_notional), drift=drift)
    union = want.index
    ref = pd.DataFrame([(union[o.bar], o.symbol, o.side, o.size, o.price, o.fees) for o in want.orders],
                       columns=["time", "symbol", "side", "size", "price", "fees"])
    mine = got.orders[["time", "symbol", "side", "size", "price", "fees"]]
    assert len(mine) == len(ref), (len(mine), len(ref))
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), ref, check_exact=False, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.equity.to_numpy(), want.value, rtol=1e-9)


def test_the_cases_cover_the_rules() -> None:
    """The random cases rebalance on drift, under lots, on mixed calendars and with shorts (counted here)."""
    seen = {"mixed": 0, "drift_trades": 0, "shorts": 0}
    for seed in CASES:
        rng = np.random.default_rng(1000 + seed)
        m = int(rng.integers(1, 5))
        frames = _frames(rng, int(rng.integers(20, 60)), m, mixed=bool(rng.random() < 0.5))
        seen["mixed"] += len({len(f) for f in frames.values()}) > 1
        max_exposure = float(rng.choice([1.0, 1.5]))
        shorts = bool(rng.random() < 0.4)
        seen["shorts"] += shorts
        weights = _weights(rng, frames, max_exposure if not shorts else max_exposure / 1.2, shorts,
                           int(rng.integers(2, 8)))
        rng.choice(["next_open", "close"]), rng.choice([0.0, 0.001]), rng.choice([0.0, 0.0005])
        rng.choice([0.0, 0.0, 1.0, 0.1]), rng.choice([0.0, 0.0, 50.0])
        drift = [None, 0.05, 0.2][int(rng.integers(0, 3))]
        if drift is not None:
            with_drift = simulate_weights(frames, weights, drift=drift, max_exposure=max_exposure)
            without = simulate_weights(frames, weights, max_exposure=max_exposure)
            seen["drift_trades"] += len(with_drift.orders) > len(without.orders)
    assert seen["mixed"] >= 5 and seen["drift_trades"] >= 5 and seen["shorts"] >= 5, seen


def test_bad_input_is_one_line() -> None:
    rng = np.random.default_rng(1)
    frames = _frames(rng, 10, 2, mixed=False)
    ok = {"S0": [0.5] + [math.nan] * 9, "S1": [0.5] + [math.nan] * 9}
    with pytest.raises(DataError, match=r"hold 1\.2 of equity, more than max_exposure=1: scale the weights"):
        simulate_weights(frames, {"S0": [0.6] + [math.nan] * 9, "S1": [0.6] + [math.nan] * 9})
    with pytest.raises(DataError, match=r"weights of S1 have shape \(3,\), expected \(10,\)"):
        simulate_weights(frames, {"S0": ok["S0"], "S1": [0.1, 0.2, 0.3]})
    with pytest.raises(ConfigError, match=r"missing \['S1'\], unknown \['X'\]"):
        simulate_weights(frames, {"S0": ok["S0"], "X": ok["S1"]})
    with pytest.raises(ConfigError, match=r"costs\.impact is not modelled for target-weight portfolios"):
        simulate_weights(frames, ok, costs=Costs(impact=0.1))
    with pytest.raises(ConfigError, match="drift=0 must be a positive fraction"):
        simulate_weights(frames, ok, drift=0)
    res = simulate_weights(frames, ok)
    assert list(res.orders["reason"].unique()) == ["rebalance"]
    assert res.equity.index.equals(frames["S0"].index)


# ---------------------------------------------------------------------------------- allocator schedules
def test_rebalance_bars_are_the_first_of_each_period() -> None:
    from workbench.backtest.rebalance import rebalance_bars

    idx = pd.date_range("2025-01-30", "2025-03-04", freq="D", tz="UTC")
    monthly = idx[rebalance_bars(idx, "monthly")]
    assert [str(t.date()) for t in monthly] == ["2025-01-30", "2025-02-01", "2025-03-01"]
    weekly = idx[rebalance_bars(idx, "weekly")]
    assert all(t.day_of_week == 0 for t in weekly[1:]) and weekly[0] == idx[0]
    hours = pd.date_range("2025-01-01", periods=50, freq="h", tz="UTC")
    assert list(rebalance_bars(hours, "daily")) == [0, 24, 48]
    assert len(rebalance_bars(idx, "every")) == len(idx)
    with pytest.raises(ConfigError, match="unknown rebalance schedule 'yearly'; choose one of daily"):
        rebalance_bars(idx, "yearly")


def test_allocator_targets_see_nothing_after_their_bar_and_equal_a_fit_by_hand() -> None:
    from workbench.backtest import Allocator
    from workbench.backtest.rebalance import allocation_weights

    rng = np.random.default_rng(5)
    frames = _frames(rng, 200, 4, mixed=False)
    alloc = Allocator(method="risk_parity", window=60)
    w = allocation_weights(frames, alloc, every="monthly")
    idx = frames["S0"].index
    bars = [k for k in range(len(idx)) if not np.isnan(w["S0"].iloc[k])]
    # the first day of each month with 60 returns behind it (March 1st is bar 59: 59 returns)
    assert [str(idx[k].date()) for k in bars] == ["2025-04-01", "2025-05-01", "2025-06-01", "2025-07-01"]
    closes = pd.DataFrame({s: f["close"] for s, f in frames.items()})
    b = bars[1]
    by_hand = alloc.weights(closes.pct_change().iloc[1:b + 1])
    np.testing.assert_allclose([w[s].iloc[b] for s in frames], by_hand.to_numpy(), rtol=1e-9)
    # the future moved: nothing up to a rebalance bar changes
    moved = {s: f.copy() for s, f in frames.items()}
    for f in moved.values():
        f.iloc[b + 1:] *= 3.0
    again = allocation_weights(moved, alloc, every="monthly")
    for s in frames:
        pd.testing.assert_series_equal(again[s].iloc[: b + 1], w[s].iloc[: b + 1])


def test_a_risk_parity_portfolio_backtests_and_holds_its_targets() -> None:
    from workbench.backtest import Allocator
    from workbench.backtest.rebalance import allocation_weights

    rng = np.random.default_rng(8)
    frames = _frames(rng, 300, 5, mixed=False)
    targets = allocation_weights(frames, Allocator(method="risk_parity", window=100), every="monthly")
    res = simulate_weights(frames, targets, costs=Costs(fees=0.001), init_cash=100_000.0)
    b0 = int(np.flatnonzero(targets["S0"].notna().to_numpy())[0])  # May 1st: the first with 100 returns
    assert res.orders["time"].min() == frames["S0"].index[b0 + 1]  # filled at the next open
    # right after each rebalance (at the open), the weights held are the targets, less the costs
    for t in sorted(res.orders["time"].unique()):
        k = frames["S0"].index.get_loc(t)
        done = res.orders[res.orders["time"] <= t]
        sign = np.where(done["side"] == "buy", 1.0, -1.0)
        cash = 100_000.0 - float((sign * done["size"] * done["price"]).sum()) - float(done["fees"].sum())
        held = {s: float((sign * done["size"])[done["symbol"] == s].sum()) for s in frames}
        total = cash + sum(held[s] * frames[s]["open"].iloc[k] for s in frames)
        for s in frames:
            want = targets[s].iloc[k - 1]
            assert held[s] * frames[s]["open"].iloc[k] / total == pytest.approx(want, abs=2e-3)
