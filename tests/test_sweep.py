"""Sweeps: every row equals a `backtest(...)` of the same parameters, whatever the chunking or layout."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from workbench.backtest import Costs, Lot, Sizing, backtest
from workbench.backtest.metrics import BENCHMARK_KEYS
from workbench.backtest.options import rank_rows
from workbench.backtest.sweep import LARGE_SWEEP, SweepPlan, SweepResult, check_sweep_size, sweep
from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import ConfigError, SweepTooLarge
from workbench.strategies import get_strategy, list_strategies

# a folder that does not exist: the registry then holds the built-ins only, whatever ./research has
NO_RESEARCH = Path(__file__).with_name("_no_research_here_")
REL = 1e-9
# metrics backtest() reports that a sweep may leave out (they need per-bar wall-clock time, exposure or
# the per-bar returns against the benchmark)
SWEEP_MAY_LACK = {"max_drawdown_days", "avg_gross_exposure", *BENCHMARK_KEYS}
COSTS = Costs(fees=0.0007, slippage=0.0003, slippage_vol=0.2, vol_window=10)
ML_CHEAP = {"model": "logistic", "refit_every": 1000, "min_train": 1000, "horizon": 6, "purge": 6}

# 2-4 combinations per built-in, chosen to exercise shorts, stops, trailing stops and composites
TINY_GRIDS: dict[str, tuple[dict[str, list[Any]], dict[str, Any]]] = {
    "sma_cross": ({"fast": [5, 10], "short": [False, True]}, {"slow": 30}),
    "ema_cross": ({"fast": [5, 10], "short": [False, True]}, {"slow": 30}),
    "macd": ({"fast": [6, 12], "short": [False, True]}, {"slow": 26, "signal": 9}),
    "rsi_mr": ({"window": [7, 14], "stop_loss": [0.0, 0.05]}, {"short": True}),
    "bollinger_mr": ({"k": [1.5, 2.0], "short": [False, True]}, {"window": 20}),
    "donchian_breakout": ({"trail": [False, True], "atr_mult": [2.0, 3.0]},
                          {"entry": 20, "exit": 10, "atr_window": 14}),
    "regime": ({"regime.mode": ["trend", "volatility"], "sma_cross.short": [False, True]},
               {"sma_cross.fast": 10, "sma_cross.slow": 40}),
    "ensemble": ({"vote.min_votes": [1, 2]}, {}),
    "ml_classifier": ({"threshold": [0.5, 0.55]}, ML_CHEAP),
}


def builtins() -> list[str]:
    """Every built-in the registry knows (a new module is swept here without editing this file)."""
    return sorted(list_strategies(NO_RESEARCH))


def tiny_grid(name: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The grid above (or two values of the first parameter); every other parameter is fixed."""
    strat = get_strategy(name, NO_RESEARCH)
    first = strat.space.params[0]
    grid, overrides = TINY_GRIDS.get(name, ({first.name: first.grid()[:2]}, {}))
    fixed = {p.name: p.default for p in strat.space.params if p.name not in grid}
    return grid, {**fixed, **overrides}


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    """About 2,900 hourly bars of two seeded synthetic symbols."""
    start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-05-01", tz="UTC")
    src = SyntheticSource(seed=7)
    return {s: src.bars(s, "1h", start, end).set_index("ts") for s in ("BTC/USDT", "ETH/USDT")}


@pytest.fixture(scope="module")
def sma_sweep(bars: dict[str, pd.DataFrame]) -> SweepResult:
    """A small per-symbol sweep shared by the chunking, saving and plotting tests."""
    return sweep("sma_cross", bars, {"fast": [5, 10, 15], "slow": [30, 60]}, fixed={"short": True},
                 costs=COSTS)


def same(a: float, b: float) -> bool:
    """Equal to REL, NaN equal to NaN, infinities equal by sign."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def assert_row_matches(row: pd.Series, metrics: dict[str, float], where: str) -> None:
    missing = set(metrics) - set(row.index)
    assert missing <= SWEEP_MAY_LACK, f"{where}: the sweep lacks {sorted(missing - SWEEP_MAY_LACK)}"
    bad = {k: (row[k], v) for k, v in metrics.items() if k in row.index and not same(float(row[k]), float(v))}
    assert not bad, f"{where}: sweep vs backtest differ in {bad}"


def params_of(row: pd.Series, names: list[str]) -> dict[str, Any]:
    return {n: row[n].item() if hasattr(row[n], "item") else row[n] for n in names}


@pytest.mark.parametrize("name", builtins())
def test_sweep_rows_equal_backtests_for_every_builtin(name: str, bars: dict[str, pd.DataFrame]) -> None:
    grid, fixed = tiny_grid(name)
    one = bars["BTC/USDT"]
    settings: dict[str, Any] = {"costs": COSTS, "fill": "next_open", "sizing": Sizing(kind="volatility",
                                                                                        target_vol=0.3)}
    result = sweep(name, one, grid, fixed=fixed, **settings)
    assert 2 <= len(result.table) <= 4
    strat = get_strategy(name, NO_RESEARCH)
    for _, row in result.table.iterrows():
        p = params_of(row, strat.space.names)
        assert_row_matches(row, backtest(name, one, p, **settings).metrics, f"{name}{p}")


@pytest.mark.parametrize(("name", "fill", "direction"), [("sma_cross", "close", "short"),
                                                         ("rsi_mr", "close", "both"),
                                                         ("donchian_breakout", "next_open", "long")])
def test_sweep_rows_equal_backtests_with_other_fills_and_directions(
    name: str, fill: str, direction: str, bars: dict[str, pd.DataFrame]
) -> None:
    grid, fixed = tiny_grid(name)
    one = bars["ETH/USDT"]
    settings: dict[str, Any] = {"costs": Costs(fees=0.002, slippage=0.001), "fill": fill,
                                "direction": direction, "init_cash": 12_345.0, "max_exposure": 0.7}
    result = sweep(name, one, grid, fixed=fixed, **settings)
    strat = get_strategy(name, NO_RESEARCH)
    for _, row in result.table.iterrows():
        p = params_of(row, strat.space.names)
        assert_row_matches(row, backtest(name, one, p, **settings).metrics, f"{name}{p}")


def test_sweep_rows_equal_backtests_with_lots_and_long_margin(bars: dict[str, pd.DataFrame]) -> None:
    """The sweep runs the same lot rounding, margin floor and margin interest as the backtest."""
    grid, fixed = tiny_grid("sma_cross")
    settings: dict[str, Any] = {"costs": Costs(fees=0.002, margin_rate=0.08),
                                "sizing": Sizing(fraction=0.9), "max_exposure": 2.0,
                                "lots": {"BTC/USDT": Lot(step=0.01, min_notional=10.0),
                                         "ETH/USDT": Lot(step=1)}}
    result = sweep("sma_cross", bars, grid, fixed=fixed, portfolio=True, **settings)
    assert result.inputs["lots"]["ETH/USDT"] == {"step": 1.0, "min_qty": 0.0, "min_notional": 0.0}
    for _, row in result.table.iterrows():
        p = params_of(row, result.params)
        res = backtest("sma_cross", bars, p, **settings)
        assert_row_matches(row, res.metrics, f"{p}")
        sizes = res.orders.loc[res.orders["symbol"] == "ETH/USDT", "size"]
        assert (sizes == sizes.round()).all()


def test_per_symbol_rows_equal_single_symbol_backtests(sma_sweep: SweepResult,
                                                       bars: dict[str, pd.DataFrame]) -> None:
    table = sma_sweep.table
    assert sorted(table["symbol"].unique()) == ["BTC/USDT", "ETH/USDT"]
    assert len(table) == 2 * 6
    for _, row in table.iterrows():
        p = params_of(row, sma_sweep.params)
        sym = row["symbol"]
        result = backtest("sma_cross", {sym: bars[sym]}, p, costs=COSTS)
        assert_row_matches(row, result.metrics, f"{sym} {p}")


def test_portfolio_rows_equal_multi_symbol_backtests(bars: dict[str, pd.DataFrame]) -> None:
    grid, fixed = tiny_grid("rsi_mr")
    result = sweep("rsi_mr", bars, grid, fixed=fixed, costs=COSTS, portfolio=True)
    assert list(result.table["symbol"].unique()) == ["BTC/USDT,ETH/USDT"]
    assert len(result.table) == 4
    for _, row in result.table.iterrows():
        p = params_of(row, result.params)
        assert_row_matches(row, backtest("rsi_mr", bars, p, costs=COSTS).metrics, f"portfolio {p}")


def test_tiny_memory_budget_gives_the_identical_table(sma_sweep: SweepResult,
                                                      bars: dict[str, pd.DataFrame]) -> None:
    calls: list[tuple[int, int]] = []
    chunked = sweep("sma_cross", bars, {"fast": [5, 10, 15], "slow": [30, 60]}, fixed={"short": True},
                    costs=COSTS, memory_mb=0.001, progress=lambda done, total: calls.append((done, total)))
    assert chunked.timings["chunk"] == 1
    pd.testing.assert_frame_equal(chunked.table, sma_sweep.table, check_exact=True)
    # one call per chunk, counting up to the total (combinations x symbols)
    assert len(calls) == 12
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (12, 12)
    assert {t for _, t in calls} == {12}


def test_progress_reaches_the_total_with_the_default_budget(bars: dict[str, pd.DataFrame]) -> None:
    calls: list[tuple[int, int]] = []
    sweep("sma_cross", bars["BTC/USDT"], {"fast": [5, 10], "slow": [30]}, grid_all=True,
          progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (4, 4)  # grid_all: short walks its own grid, False and True


def test_save_round_trips_and_parquet_keeps_the_inputs(sma_sweep: SweepResult, tmp_path: Path) -> None:
    pq_path = sma_sweep.save(tmp_path / "deep" / "sweep.parquet")
    back = pd.read_parquet(pq_path)
    pd.testing.assert_frame_equal(back, sma_sweep.table, check_dtype=False, check_exact=True)
    meta = json.loads(pq.read_schema(pq_path).metadata[b"workbench"])
    assert meta["data_fingerprint"] == sma_sweep.inputs["data_fingerprint"]
    assert meta["data_fingerprint"].startswith("sha256:")
    assert meta["code_version"] == sma_sweep.inputs["code_version"]
    assert meta["strategy"] == "sma_cross" and meta["costs"]["fees"] == COSTS.fees
    assert meta["grid"] == {"fast": [5, 10, 15], "slow": [30, 60]} and meta["fixed"] == {"short": True}

    csv_path = sma_sweep.save(tmp_path / "sweep.csv")
    back = pd.read_csv(csv_path)
    pd.testing.assert_frame_equal(back, sma_sweep.table, check_dtype=False, check_exact=False, rtol=1e-15)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temp files


def test_save_refuses_other_suffixes_and_unwritable_folders(sma_sweep: SweepResult, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.parquet or \.csv"):
        sma_sweep.save(tmp_path / "sweep.xlsx")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="writable folder"):
        sma_sweep.save(blocker / "sweep.parquet")


def test_heatmap_is_a_figure_of_the_metric(sma_sweep: SweepResult) -> None:
    fig = sma_sweep.heatmap("fast", "slow", metric="sharpe")
    heat = fig.data[0]
    assert heat.type == "heatmap"
    assert list(heat.x) == ["5", "10", "15"] and list(heat.y) == ["30", "60"]
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (2, 3)
    want = sma_sweep.table.groupby(["slow", "fast"])["sharpe"].max().unstack("fast").to_numpy()
    np.testing.assert_allclose(z, want, rtol=1e-12)


def test_empty_feasible_grid_is_a_config_error(bars: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ConfigError, match="no feasible combination") as info:
        sweep("sma_cross", bars["BTC/USDT"], {"fast": [50, 60], "slow": [20, 30]})
    assert "\n" not in str(info.value)


def test_unknown_grid_parameter_is_a_config_error_with_a_suggestion(bars: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ConfigError, match="did you mean 'fast'"):
        sweep("sma_cross", bars["BTC/USDT"], {"fsat": [5, 10]})


def test_ranking_skips_infinite_and_nan_values() -> None:
    table = pd.DataFrame({"fast": [1, 2, 3, 4, 5], "sharpe": [0.5, np.inf, 1.5, np.nan, -np.inf],
                          "annual_volatility": [0.3, 0.1, 0.2, np.nan, 0.4]})
    best, left_out = rank_rows(table, "sharpe", 10)
    assert best["fast"].tolist() == [3, 1] and left_out == 3
    best, _ = rank_rows(table, "annual_volatility", 2)
    assert best["fast"].tolist() == [2, 3]  # lower volatility ranks first


def test_runs_without_trades_never_top_the_ranking(bars: dict[str, pd.DataFrame]) -> None:
    # on 600 bars sma_cross(200, 500) never trades: a flat equity has no Sharpe (NaN, never +inf)
    result = sweep("sma_cross", bars["BTC/USDT"].iloc[:600], {"fast": [5, 100, 200], "slow": [500]},
                   fixed={"short": False})
    table = result.table.set_index("fast")
    assert math.isnan(table.loc[200, "sharpe"]) and table.loc[200, "n_trades"] == 0
    assert math.isnan(table.loc[200, "sortino"])
    assert not np.isinf(result.table[["sharpe", "sortino", "calmar"]].to_numpy(dtype=float)).any()
    assert np.isfinite(table.loc[[5, 100], "sharpe"]).all()
    assert result.top(3, "sharpe")["fast"].tolist() == [5, 100, 200]  # non-finite last
    best, left_out = rank_rows(result.table, "sharpe", 3)
    assert best["fast"].tolist() == [5, 100] and left_out == 1  # the CLI shows finite values only


# ------------------------------------------------------------------------- sweeps that stay in bounds


def test_parameters_not_in_the_grid_keep_their_defaults(bars: dict[str, pd.DataFrame]) -> None:
    strat = get_strategy("sma_cross")
    result = sweep(strat, bars["BTC/USDT"], {"fast": [5, 10]})
    assert len(result.table) == 2  # not x slow's 40 values x short's 2
    assert set(result.table["slow"]) == {strat.space["slow"].default}
    assert set(result.table["short"]) == {strat.space["short"].default}
    walked = sweep(strat, bars["BTC/USDT"], {"fast": [5, 10], "slow": [30]}, grid_all=True)
    assert sorted(walked.table["short"]) == [False, False, True, True]  # asked for: its own grid


def test_a_grid_that_names_nothing_is_refused(bars: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ConfigError, match="nothing to sweep in sma_cross: give values for fast, slow") as exc:
        sweep("sma_cross", bars["BTC/USDT"], fixed={"short": False})
    assert "grid_all=True" in str(exc.value) and "\n" not in str(exc.value)


def test_a_large_sweep_needs_an_explicit_yes_before_any_work(bars: dict[str, pd.DataFrame]) -> None:
    strat = get_strategy("ml_classifier", NO_RESEARCH)
    size = strat.space.grid_size(walk_all=True)
    assert size == 3_456_000 > LARGE_SWEEP  # every parameter's whole range: the explosion the rule stops
    with pytest.raises(SweepTooLarge, match=f"{size:,} runs, above {LARGE_SWEEP:,}") as exc:
        sweep(strat, bars["BTC/USDT"], grid_all=True)
    msg = str(exc.value)
    assert "confirm_large=True" in msg and "--yes" in msg and "--grid-all" in msg and "\n" not in msg
    # symbols swept on their own count once each; a yes lets it through (counted, nothing built)
    sma = get_strategy("sma_cross", NO_RESEARCH)
    assert check_sweep_size(sma, None, None, grid_all=True, units=25, confirm_large=False) == 100_000
    with pytest.raises(SweepTooLarge, match="102,000 runs"):
        check_sweep_size(sma, None, {"short": False}, grid_all=True, units=51, confirm_large=False)
    assert check_sweep_size(strat, None, None, grid_all=True, units=2, confirm_large=True) == 2 * size


def test_on_start_gets_the_count_and_an_estimate_before_the_work(bars: dict[str, pd.DataFrame]) -> None:
    seen: list[Any] = []
    result = sweep("sma_cross", bars, {"fast": [5, 10, 15], "slow": [30, 60]},
                   on_start=seen.append, progress=lambda done, total: seen.append((done, total)))
    plan = seen[0]
    assert isinstance(plan, SweepPlan) and (plan.combinations, plan.units, plan.runs) == (6, 2, 12)
    assert math.isfinite(plan.estimate_s) and plan.estimate_s > 0
    assert seen[-1] == (12, 12) and len(result.table) == 12


def test_the_sweep_kernels_cache_is_dropped_when_the_kernels_they_compiled_in_change(tmp_path) -> None:
    """numba caches by a function's own file: the sweep kernels' cache must not outlive a change of
    kernels.py or metrics.py, whose code is compiled into them."""
    from workbench.backtest.sweep import _drop_stale_cache

    cached = tmp_path / "sweep.score_nb-130.py311.nbi"
    cached.write_text("old index")
    (tmp_path / "sweep.deps-0000000000000000.stamp").touch()  # the stamp of other kernels
    other = tmp_path / "engine.other-1.py311.nbi"
    other.write_text("not ours")
    _drop_stale_cache(tmp_path)
    assert not cached.exists() and other.exists()
    [stamp] = tmp_path.glob("sweep.deps-*.stamp")
    cached.write_text("new index")
    _drop_stale_cache(tmp_path)  # the same kernels: kept
    assert cached.exists() and stamp.exists()
