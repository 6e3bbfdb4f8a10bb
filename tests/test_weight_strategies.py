"""Weight strategies: the built-ins' targets equal a computation by hand, they see nothing after their bar
(the future moved, the past targets stay), only the schedule's rebalance bars keep targets, a closed market
takes its target at its next bar, and the backtest trades them by the rebalancing rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.backtest import Costs
from workbench.backtest.rebalance import backtest_weights, simulate_weights
from workbench.errors import ConfigError, DataError
from workbench.strategies.weights import WEIGHT_STRATEGIES, get_weight_strategy


def _frames(n: int = 300, m: int = 5, seed: int = 4) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    out = {}
    for j in range(m):
        close = 100 * np.exp(np.cumsum(rng.normal(0.0005 * j, 0.01 * (1 + j), n)))
        out[f"S{j}"] = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                                     "close": close}, index=idx)
    return out


def test_xs_momentum_holds_the_top_symbols_by_trailing_return_at_each_month_start() -> None:
    frames = _frames()
    t = get_weight_strategy("xs_momentum").targets(frames, {"lookback": 63, "top": 2, "every": "monthly"})
    closes = pd.DataFrame({s: f["close"] for s, f in frames.items()})
    idx = closes.index
    bars = [k for k in range(len(idx)) if not np.isnan(t["S0"].iloc[k])]
    assert all(idx[k].day == 1 for k in bars) and bars[0] > 63
    for k in bars:
        past = closes.iloc[k] / closes.iloc[k - 63] - 1
        best = set(past.sort_values(ascending=False).index[:2])
        got = {s: t[s].iloc[k] for s in frames}
        assert got == {s: (0.5 if s in best else 0.0) for s in frames}


def test_xs_reversal_holds_the_symbols_with_the_lowest_short_return_at_each_week_start() -> None:
    frames = _frames()
    t = get_weight_strategy("xs_reversal").targets(frames, {"lookback": 5, "top": 2})  # weekly by default
    closes = pd.DataFrame({s: f["close"] for s, f in frames.items()})
    idx = closes.index
    bars = [k for k in range(len(idx)) if not np.isnan(t["S0"].iloc[k])]
    assert bars[0] > 5 and len(bars) > 35
    assert all(idx[k].day_of_week == 0 for k in bars)  # Mondays: the first bar of each ISO week
    assert bars == [k for k in range(6, len(idx)) if idx[k].day_of_week == 0]
    picks = []
    for k in bars:
        past = closes.iloc[k] / closes.iloc[k - 5] - 1
        losers = set(past.sort_values(ascending=True).index[:2])
        picks.append(losers)
        got = {s: t[s].iloc[k] for s in frames}
        assert got == {s: (0.5 if s in losers else 0.0) for s in frames}
    assert len({frozenset(p) for p in picks}) > 3  # the losers change: the test sees the ranking


def test_low_vol_weights_the_calmest_inversely_to_their_volatility() -> None:
    frames = _frames()
    t = get_weight_strategy("low_vol").targets(frames, {"lookback": 42, "top": 3, "every": "weekly"})
    closes = pd.DataFrame({s: f["close"] for s, f in frames.items()})
    k = next(k for k in range(len(closes)) if not np.isnan(t["S0"].iloc[k]))
    assert closes.index[k].day_of_week == 0  # a Monday: the first bar of an ISO week
    vol = closes.pct_change().iloc[k - 41:k + 1].std()
    calm = vol.sort_values().index[:3]
    want = (1 / vol[calm]) / (1 / vol[calm]).sum()
    for s in frames:
        assert t[s].iloc[k] == pytest.approx(want.get(s, 0.0), rel=1e-9)


@pytest.mark.parametrize("strategy", [s.name for s in WEIGHT_STRATEGIES])
def test_targets_see_nothing_after_their_bar(strategy: str) -> None:
    frames = _frames()
    strat = get_weight_strategy(strategy)
    before = strat.targets(frames, {"lookback": 42, "every": "weekly"})
    cut = 200
    moved = {s: f.copy() for s, f in frames.items()}
    rng = np.random.default_rng(9)
    for f in moved.values():
        f.iloc[cut + 1:] *= rng.uniform(0.5, 2.0)
    after = strat.targets(moved, {"lookback": 42, "every": "weekly"})
    for s in frames:
        pd.testing.assert_series_equal(after[s].iloc[: cut + 1], before[s].iloc[: cut + 1])


def test_a_closed_market_takes_its_target_at_its_next_bar() -> None:
    frames = _frames(n=160, m=3)
    frames["S1"] = frames["S1"][frames["S1"].index.day_of_week < 5]  # weekends off
    t = get_weight_strategy("xs_momentum").targets(frames, {"lookback": 21, "top": 2, "every": "monthly"})
    june = pd.Timestamp("2024-06-01", tz="UTC")  # a Saturday: S1 takes its target on Monday the 3rd
    assert not np.isnan(t["S0"].loc[june]) and june not in t["S1"].index
    assert not np.isnan(t["S1"].loc[pd.Timestamp("2024-06-03", tz="UTC")])


def test_the_backtest_trades_the_targets_by_the_rules() -> None:
    frames = _frames()
    params = {"lookback": 63, "top": 2, "every": "monthly"}
    res = backtest_weights("xs_momentum", frames, params, costs=Costs(fees=0.001))
    direct = simulate_weights(frames, get_weight_strategy("xs_momentum").targets(frames, params),
                              costs=Costs(fees=0.001))
    pd.testing.assert_frame_equal(res.orders, direct.orders)
    assert res.inputs["strategy"] == "xs_momentum" and res.inputs["params"]["top"] == 2
    assert len(res.orders) > 10 and (res.orders["reason"] == "rebalance").all()


def test_bad_input_is_one_line() -> None:
    frames = _frames(n=50)
    with pytest.raises(ConfigError, match=r"no weight strategy 'xs_momentom' \(did you mean "
                       r"'xs_momentum'\?\); built-ins: xs_momentum, xs_reversal, low_vol"):
        get_weight_strategy("xs_momentom")
    with pytest.raises(ConfigError, match="'sma_cross' is a signal strategy, not a weight strategy"):
        get_weight_strategy("sma_cross")
    with pytest.raises(DataError, match=r"xs_momentum needs more than 126 bars .* the bars span 50"):
        backtest_weights("xs_momentum", frames)
    with pytest.raises(ConfigError, match="every"):
        backtest_weights("xs_momentum", frames, {"lookback": 5, "every": "yearly"})
    with pytest.raises(ConfigError, match="top"):
        backtest_weights("xs_momentum", frames, {"lookback": 5, "top": 0})
