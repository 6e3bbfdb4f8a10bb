"""Sweeps of weight strategies: every combination trades the universe as one book, and its row equals a
direct `backtest_weights` of the same parameters measured by `weight_backtest_metrics`, with the total
return, drawdown, turnover and buy-and-hold benchmark recomputed by hand from the equity, the orders and
the bars. Grid sizes, refusals and a saved sweep read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_weight_research import _frames as weight_frames

from workbench.backtest import Costs
from workbench.backtest.engine import Sizing
from workbench.backtest.rebalance import backtest_weights
from workbench.backtest.sweep import SweepPlan, SweepResult, list_sweeps, load_sweep, sweep
from workbench.backtest.weight_strategies import ALLOCATE, weight_backtest_metrics
from workbench.errors import ConfigError, DataError, SweepTooLarge
from workbench.strategies.base import ParamSpace, int_param
from workbench.strategies.weights import WeightStrategy, get_weight_strategy

FEES, SLIP = 0.001, 0.0005
COSTS = Costs(fees=FEES, slippage=SLIP)
CASH = 100_000.0
GRIDS = {
    "allocate": ({"method": ["equal", "inverse_vol"], "window": [21, 42]}, {"every": "monthly"}),
    "xs_momentum": ({"lookback": [10, 30], "top": [1, 2]}, {"every": "weekly"}),
}


def _frames(n: int = 260, m: int = 3, seed: int = 3) -> dict[str, pd.DataFrame]:
    return weight_frames(n, m, seed)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return _frames()


@pytest.fixture(scope="module")
def swept(frames: dict[str, pd.DataFrame]) -> dict[str, tuple[SweepResult, list, list]]:
    """Each strategy's sweep (by name), with the progress calls and start plans it reported."""
    out = {}
    for name, (grid, fixed) in GRIDS.items():
        calls: list[tuple[int, int]] = []
        plans: list[SweepPlan] = []
        res = sweep(name, frames, grid, fixed=fixed, costs=COSTS, init_cash=CASH,
                    progress=lambda d, t, c=calls: c.append((d, t)), on_start=plans.append)
        out[name] = (res, calls, plans)
    return out


@pytest.mark.parametrize("name", list(GRIDS))
def test_each_row_equals_a_direct_weight_backtest_and_a_hand_count(frames, swept, name: str) -> None:
    res, _, _ = swept[name]
    strat = ALLOCATE if name == "allocate" else get_weight_strategy(name)
    ppy = float(res.inputs["periods_per_year"])
    assert len(res.table) == 4 and set(res.table["symbol"]) == {"S0,S1,S2"}  # one book, one row per combo
    # buy and hold by hand: a third of the cash in each symbol at the second bar's open (next_open fill)
    # plus slippage, fees on top, held to the last close
    bench_end = sum(CASH / 3 / (1 + FEES) / (f["open"].iloc[1] * (1 + SLIP)) * f["close"].iloc[-1]
                    for f in frames.values())
    bench_ret = bench_end / CASH - 1.0
    for _, row in res.table.iterrows():
        params = {p: row[p] for p in res.params}
        direct = backtest_weights(strat, frames, params, costs=COSTS, init_cash=CASH)
        m = weight_backtest_metrics(direct, frames, ppy)
        for key in ("total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "calmar",
                    "max_drawdown", "max_drawdown_duration", "n_trades", "n_open_trades", "win_rate",
                    "exposure", "turnover"):
            assert row[key] == pytest.approx(m[key], rel=1e-12, nan_ok=True), (params, key)
        eq = direct.equity.to_numpy()
        assert len(direct.orders) > 0, "a combination that never trades proves little"
        assert row["total_return"] == pytest.approx(eq[-1] / CASH - 1.0, rel=1e-12)
        assert row["max_drawdown"] == pytest.approx((eq / np.maximum.accumulate(eq) - 1.0).min(), rel=1e-12)
        traded = float((direct.orders["size"] * direct.orders["price"]).sum())
        assert row["turnover"] == pytest.approx(traded / eq.mean() / (len(eq) / ppy), rel=1e-12)
        assert row["benchmark_return"] == pytest.approx(bench_ret, rel=1e-9)
        assert row["excess_return"] == pytest.approx(eq[-1] / CASH - 1.0 - bench_ret, rel=1e-9)


def test_the_table_has_a_signal_portfolio_sweeps_layout(frames, swept) -> None:
    res, calls, plans = swept["allocate"]
    signal = sweep("sma_cross", frames, {"fast": [5], "slow": [20]}, portfolio=True)
    assert list(res.table.columns) == [*ALLOCATE.space.names, *signal.table.columns[len(signal.params):]]
    assert res.table.dtypes["n_trades"] == np.int64 and res.strategy == "allocate"
    assert sorted(map(tuple, res.table[["method", "window"]].to_numpy().tolist())) == [
        ("equal", 21), ("equal", 42), ("inverse_vol", 21), ("inverse_vol", 42)]
    assert (res.table["every"] == "monthly").all()
    assert res.inputs["combinations"] == 4 and res.inputs["portfolio"] is True
    assert res.inputs["symbols"] == ["S0", "S1", "S2"]
    # the bar: the plan before it moves, then every combination counted up to the total
    assert len(plans) == 1 and plans[0].combinations == 4 and plans[0].units == 1
    assert plans[0].estimate_s > 0
    assert calls[-1] == (4, 4) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_sizes_and_refusals(frames) -> None:
    with pytest.raises(ConfigError, match="nothing to sweep in allocate"):
        sweep("allocate", frames, None)
    with pytest.raises(ConfigError, match=r"unknown parameter 'windw'.*did you mean 'window'"):
        sweep("allocate", frames, {"windw": [21]})
    with pytest.raises(ConfigError, match=r"a sizing rule .* would have no effect"):
        sweep("allocate", frames, {"window": [21]}, sizing=Sizing(kind="risk", risk=0.01))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="direction=long would have no effect"):
        sweep("xs_momentum", frames, {"top": [1]}, direction="long")
    wide = WeightStrategy("wide", ParamSpace.of(int_param("a", 1, 1, 1000), int_param("b", 1, 1, 1000)),
                          lambda closes, p: closes * 0.0)
    with pytest.raises(SweepTooLarge, match="1,000,000 runs"):  # a book counts once, whatever the symbols
        sweep(wide, frames, None, grid_all=True)
    few = sweep(wide, frames, {"a": [1, 2, 3]}, fixed={"b": 2})
    assert len(few.table) == 3 and list(few.table["a"]) == [1, 2, 3] and (few.table["b"] == 2).all()
    assert (few.table["total_return"] == 0.0).all()  # zero weights: nothing traded
    with pytest.raises(DataError, match="needs more than 300 bars"):
        sweep("xs_momentum", frames, {"lookback": [300]})


def test_a_saved_sweep_reloads_and_is_listed(swept, tmp_path: Path) -> None:
    res, _, _ = swept["allocate"]
    path = res.save(tmp_path / "sweeps" / "alloc.parquet")
    back = load_sweep(path)
    pd.testing.assert_frame_equal(back.table, res.table)
    assert back.strategy == "allocate" and back.params == ALLOCATE.space.names
    assert back.inputs["grid"] == {"method": ["equal", "inverse_vol"], "window": [21, 42]}
    index = list_sweeps(tmp_path)
    assert list(index.sweeps["path"]) == ["sweeps/alloc.parquet"] and not index.damaged
    row = index.sweeps.iloc[0]
    assert row["strategy"] == "allocate" and row["symbols"] == "S0,S1,S2" and row["combinations"] == 4
    fig = back.heatmap("method", "window", metric="sharpe")
    z = np.asarray(fig.data[0].z, dtype=float)
    best = back.table.pivot_table(index="window", columns="method", values="sharpe", aggfunc="max")
    assert np.allclose(np.sort(z[np.isfinite(z)]), np.sort(best.to_numpy().ravel()))
