"""`workbench portfolio` end to end on a small lake of daily equities, and its bad input.

The portfolios run once in a module fixture (in this process, through `cli_runner.invoke`); each test
checks its command's output against an independent computation: targets placed by hand (the reversal
ranking, the table's rows on the first bar at or after their dates) traded by the engine
(`simulate_weights`), the buy-and-hold benchmark, exposure and turnover worked out with numpy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runner import CliResult, invoke

from workbench import Lake
from workbench.backtest import Costs, load_bars, simulate_weights
from workbench.data.sources.synthetic import SyntheticSource

SYMS = ["AAPL", "MSFT", "SPY"]
U = ["--symbols", ",".join(SYMS)]
PF = ["portfolio", *U]
RP = [*PF, "--allocator", "risk_parity"]


def _ok_commands(out: Path) -> dict[str, list[str]]:
    return {
        "reversal": [*PF, "--strategy", "xs_reversal", "--params", "lookback=10,top=1", "--every", "monthly",
                     "--orders",
                     str(out / "rev.csv"), "--html", str(out / "rev.html")],
        "alloc": [*RP, "--window", "63", "--every", "monthly", "--max-weight", "0.5", "--gross", "0.9",
                  "--drift", "0.05", "--start", "2024-01-01", "--orders", str(out / "rp.parquet")],
        "alloc_workers": [*RP, "--window", "63", "--every", "monthly", "--max-weight", "0.5", "--gross",
                          "0.9", "--drift", "0.05", "--start", "2024-01-01", "--workers", "2", "--orders",
                          str(out / "rp_workers.parquet")],
        "table": ["portfolio", "--weights", str(out / "wide.csv"), "--fill", "close", "--costs",
                  "fees=0.002,slippage=0", "--orders", str(out / "wide_orders.csv")],
        "table_long": [*PF, "--weights", str(out / "long.parquet"), "--fill", "close", "--costs",
                       "fees=0.002,slippage=0", "--orders", str(out / "long_orders.csv")],
        "strategies": ["strategies"],
        "strategy_one": ["strategies", "xs_reversal"],
        "alloc_risk": [*RP, "--window", "63", "--vol-target", "0.08", "--benchmark", "SPY",
                       "--start", "2023-01-01"],
    }


def _bad_commands(out: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Bad input -> (arguments, strings its one error line must contain)."""
    return {
        "sum_over": (["portfolio", "--weights", str(out / "heavy.csv")],
                     ["heavy.csv: the weights in force at 2023-06-01 sum to 1.3", "max_exposure=1",
                      "scale that row down"]),
        "infeasible": ([*RP, "--max-weight", "0.2"],
                       ["max_weight=0.2 x 3 assets holds at most 0.6", "less than gross=1"]),
        "short_history": ([*RP, "--window", "400", "--start", "2024-06-01"],
                          ["the 400 bars of returns the risk_parity allocator needs (window=400)",
                           "the bars span 147"]),
        "strategy_history": ([*PF, "--strategy", "xs_momentum", "--start", "2024-10-01"],
                             ["xs_momentum needs more than 126 bars", "the bars span 64"]),
        "unknown_strategy": ([*PF, "--strategy", "xs_momentom"],
                             ["no weight strategy 'xs_momentom' (did you mean 'xs_momentum'?)"]),
        "signal_strategy": ([*PF, "--strategy", "sma_cross"],
                            ["'sma_cross' is a signal strategy", "workbench backtest --strategy sma_cross"]),
        "unknown_schedule": ([*RP, "--every", "yearly"],
                             ["unknown rebalance schedule 'yearly'", "daily, weekly, monthly, every"]),
        "strategy_schedule": ([*PF, "--strategy", "xs_reversal", "--every", "yearly"], ["every", "yearly"]),
        "unknown_allocator": ([*PF, "--allocator", "risk_parity2"], ["unknown allocator 'risk_parity2'"]),
        "allocator_and_strategy": ([*PF, "--strategy", "xs_momentum", "--allocator", "risk_parity"],
                                   ["give one source of target weights", "--strategy and --allocator"]),
        "no_source": (PF, ["give one source of target weights", "got none"]),
        "window_alone": ([*PF, "--strategy", "low_vol", "--window", "63"],
                         ["--window applies to --allocator", "drop --window"]),
        "risk_with_strategy": ([*PF, "--strategy", "xs_momentum", "--vol-target", "0.1"],
                               ["--vol-target act on an allocator's weights", "use --allocator"]),
        "bad_vol_target": ([*RP, "--vol-target", "-1"], ["vol_target"]),
        "workers_zero": ([*RP, "--workers", "0"], ["workers=0 must be a whole number of processes >= 1"]),
        "workers_turnover": ([*PF, "--allocator", "mean_variance", "--max-turnover", "0.2", "--workers", "2"],
                             ["max_turnover measures each fit from the weights of the one before",
                              "drop workers or max_turnover"]),
        "workers_with_table": (["portfolio", "--weights", str(out / "wide.csv"), "--workers", "2"],
                               ["--workers fits an allocator's rebalances", "drop --workers"]),
        "unknown_benchmark": ([*RP, "--benchmark", "QQQ"], ["QQQ"]),
        "sizing": ([*PF, "--strategy", "xs_momentum", "--sizing", "risk"],
                   ["--sizing applies to signal strategies", "drop --sizing"]),
        "direction": ([*RP, "--direction", "long"], ["--direction applies to signal strategies"]),
        "every_with_table": (["portfolio", "--weights", str(out / "wide.csv"), "--every", "weekly"],
                             ["--every has no effect with --weights"]),
        "gross_over": ([*RP, "--gross", "1.5"], ["--gross 1.5 is more than --max-exposure 1"]),
        "costs_unmodelled": ([*RP, "--costs", "fees=0.001,impact=0.1"],
                             ["costs.impact is not modelled for target-weight portfolios"]),
        "table_symbol": ([*PF, "--weights", str(out / "typo.csv")],
                         ["typo.csv has weights for 'APPL' (did you mean 'AAPL'?)"]),
        "table_after": (["portfolio", "--weights", str(out / "late.csv")],
                        ["late.csv has a row at 2025-02-03, after the last bar 2024-12-31"]),
        "table_missing": (["portfolio", "--weights", str(out / "nothing.csv")], ["no weights file"]),
        "table_not_a_number": (["portfolio", "--weights", str(out / "text.csv")],
                               ["the weight of MSFT at 2023-03-01", "'half'", "not a finite number"]),
        "backtest_weight_strategy": (["backtest", "--strategy", "xs_momentum", *U, "--timeframe", "1d"],
                                     ["'xs_momentum' is a weight strategy",
                                      "workbench portfolio --strategy xs_momentum"]),
    }


def _write_tables(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    wide = pd.DataFrame({"date": ["2023-03-04", "2023-09-01", "2024-05-15"],  # a Saturday: Monday's bar
                         "AAPL": [0.5, 0.2, None], "MSFT": [0.3, 0.0, 0.6], "SPY": [0.2, 0.7, 0.1]})
    wide.to_csv(out / "wide.csv", index=False)
    long = wide.melt(id_vars="date", var_name="symbol", value_name="weight").dropna()
    long.to_parquet(out / "long.parquet", index=False)
    pd.DataFrame({"date": ["2023-03-01", "2023-06-01"], "AAPL": [0.5, 0.6], "MSFT": [0.5, 0.5],
                  "SPY": [0.0, 0.2]}).to_csv(out / "heavy.csv", index=False)
    pd.DataFrame({"date": ["2023-03-01"], "APPL": [0.5], "MSFT": [0.5], "SPY": [0.0]}).to_csv(
        out / "typo.csv", index=False)
    pd.DataFrame({"date": ["2023-03-01", "2025-02-03"], "AAPL": [0.5, 0.5], "MSFT": [0.5, 0.5],
                  "SPY": [0.0, 0.0]}).to_csv(out / "late.csv", index=False)
    pd.DataFrame({"date": ["2023-03-01"], "AAPL": [0.5], "MSFT": ["half"], "SPY": [0.0]}).to_csv(
        out / "text.csv", index=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A lake of 1d AAPL, MSFT, SPY for 2022-2024, the weight tables, and every command's result."""
    root = tmp_path_factory.mktemp("cli_portfolio")
    data, out = root / "data", root / "out"
    lake = Lake(data)
    src = SyntheticSource(seed=7)
    start, end = pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2025-01-01", tz="UTC")
    for sym in SYMS:
        lake.write_bars("synthetic", sym, "1d", src.bars(sym, "1d", start, end))
    _write_tables(out)
    ok, bad = _ok_commands(out), _bad_commands(out)
    jobs = {**ok, **{k: args for k, (args, _) in bad.items()}}
    results = {k: invoke(args, data=data, cwd=root) for k, args in jobs.items()}
    bars = load_bars(lake, SYMS, "1d")
    return {"data": data, "out": out, "results": results, "bad": bad, "bars": bars}


def ok(setup: dict, name: str) -> str:
    res: CliResult = setup["results"][name]
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    return res.stdout


def metric(stdout: str, name: str) -> str:
    found = re.search(rf"│ {name}\s+│\s+(\S+(?: \S+)?) │", stdout)
    assert found, f"{name} not in the metrics table"
    return found.group(1)


def _orders_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want) > 0
    assert pd.to_datetime(got["time"], utc=True).tolist() == want["time"].tolist()
    assert got["symbol"].tolist() == want["symbol"].tolist() and got["side"].tolist() == want["side"].tolist()
    np.testing.assert_allclose(got["size"].to_numpy(), want["size"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(got["price"].to_numpy(), want["price"].to_numpy(), rtol=1e-9)


def test_a_weight_strategy_trades_the_reversal_targets_computed_by_hand(setup: dict) -> None:
    stdout = ok(setup, "reversal")
    bars = setup["bars"]
    closes = pd.DataFrame({s: bars[s]["close"] for s in SYMS})
    idx = closes.index
    month = idx.year * 100 + idx.month
    firsts = [k for k in range(10, len(idx)) if month[k] != month[k - 1]]  # from bar 10: 10 bars back
    targets = {s: pd.Series(np.nan, index=idx) for s in SYMS}
    for k in firsts:  # the first bar of each month: all in the one symbol with the lowest 10-bar return
        loser = (closes.iloc[k] / closes.iloc[k - 10] - 1).idxmin()
        for s in SYMS:
            targets[s].iloc[k] = 1.0 if s == loser else 0.0
    want = simulate_weights(bars, targets, costs=Costs())
    _orders_equal(pd.read_csv(setup["out"] / "rev.csv"), want.orders)

    assert "xs_reversal lookback=10,top=1,every=monthly on AAPL, MSFT, SPY" in stdout  # --every applied
    assert "SYNTHETIC" in stdout
    assert metric(stdout, "rebalances") == str(len(firsts))
    assert metric(stdout, "orders") == f"{len(want.orders):,}"
    assert metric(stdout, "bars traded") == str(want.orders["time"].nunique())
    total = want.equity.iloc[-1] / 100_000 - 1
    assert metric(stdout, "total_return") == f"{total * 100:.2f}%"
    # held from the first order on: exposure is the share of bars from that one
    first = idx.get_loc(want.orders["time"].iloc[0])
    assert metric(stdout, "exposure") == f"{(len(idx) - first) / len(idx) * 100:.2f}%"
    # turnover: value traded / mean equity / years (NYSE daily bars: 252 x 365.25 / 365.25 a year)
    from workbench.backtest.metrics import periods_per_year

    years = len(idx) / periods_per_year("1d", "XNYS")
    turnover = (want.orders["size"] * want.orders["price"]).sum() / want.equity.mean() / years
    assert metric(stdout, "turnover") == f"{turnover:.2f} x/yr"
    # buy and hold: a third of the cash in each at its second bar's open, with fees and slippage
    c = Costs()
    held = sum((100_000 / 3) / (1 + c.fees) / (bars[s]["open"].iloc[1] * (1 + c.slippage))
               * bars[s]["close"].iloc[-1] for s in SYMS)
    assert metric(stdout, "benchmark_return") == f"{(held / 100_000 - 1) * 100:.2f}%"
    assert "win_rate" not in stdout and "profit_factor" not in stdout  # no round trips in a book
    last = firsts[-1]
    assert f"set {idx[last]:%Y-%m-%d} 00:00" in stdout
    page = (setup["out"] / "rev.html").read_text()
    assert "buy & hold" in page and "drawdown %" in page


def test_an_allocator_portfolio_is_the_allocator_fitted_on_its_schedule_and_traded(setup: dict) -> None:
    from workbench.backtest import Allocator
    from workbench.backtest.rebalance import allocation_weights

    stdout = ok(setup, "alloc")
    bars = {s: f.loc["2024-01-01":] for s, f in setup["bars"].items()}
    alloc = Allocator(method="risk_parity", window=63, max_weight=0.5, gross=0.9)
    targets = allocation_weights(bars, alloc, every="monthly")
    want = simulate_weights(bars, targets, costs=Costs(), drift=0.05)
    _orders_equal(pd.read_parquet(setup["out"] / "rp.parquet"), want.orders)
    months = bars["SPY"].index.tz_localize(None).to_period("M")
    firsts = [k for k in range(63, len(months)) if months[k] != months[k - 1]]
    assert metric(stdout, "rebalances") == str(len(firsts)) == "8"  # May to December 2024
    assert "risk_parity allocator every=monthly on AAPL, MSFT, SPY" in stdout
    assert "window 63, gross 0.9, max_weight 0.5" in stdout and "│ drift" in stdout
    set_at = [ln for ln in stdout.splitlines() if ln.startswith("│ SPY ")][-1]
    weights = {s: targets[s].dropna().iloc[-1] for s in SYMS}
    assert f"{weights['SPY'] * 100:.2f}%" in set_at
    assert sum(weights.values()) == pytest.approx(0.9) and max(weights.values()) <= 0.5 + 1e-9
    # the fits in two processes: the same orders, to the bit
    pd.testing.assert_frame_equal(pd.read_parquet(setup["out"] / "rp_workers.parquet"),
                                  pd.read_parquet(setup["out"] / "rp.parquet"))
    assert ok(setup, "alloc_workers").replace("rp_workers", "rp") == stdout


def test_a_table_of_weights_sets_each_row_at_the_first_bar_on_or_after_its_date(setup: dict) -> None:
    stdout = ok(setup, "table")
    bars = setup["bars"]
    idx = bars["SPY"].index
    rows = {"2023-03-06": {"AAPL": 0.5, "MSFT": 0.3, "SPY": 0.2},  # Saturday 4 March -> Monday 6
            "2023-09-01": {"AAPL": 0.2, "MSFT": 0.0, "SPY": 0.7},
            "2024-05-15": {"MSFT": 0.6, "SPY": 0.1}}  # AAPL's empty cell: its 0.2 stays
    targets = {s: pd.Series(np.nan, index=idx) for s in SYMS}
    for day, ws in rows.items():
        for s, w in ws.items():
            targets[s].loc[pd.Timestamp(day, tz="UTC")] = w
    want = simulate_weights(bars, targets, costs=Costs(fees=0.002, slippage=0.0), fill="close")
    _orders_equal(pd.read_csv(setup["out"] / "wide_orders.csv"), want.orders)
    _orders_equal(pd.read_csv(setup["out"] / "long_orders.csv"), want.orders)
    assert ok(setup, "table_long").count("│ rebalances ") == 1
    assert "weights from" in stdout and "(3 rows) on AAPL, MSFT, SPY" in stdout
    assert metric(stdout, "rebalances") == "3"
    assert metric(stdout, "total_return") == f"{(want.equity.iloc[-1] / 100_000 - 1) * 100:.2f}%"
    assert "set 2024-05-15 00:00" in stdout and "20.00%" in stdout  # AAPL keeps its September 0.2


def test_strategies_lists_the_weight_strategies_and_allocators(setup: dict) -> None:
    from workbench.strategies.weights import WEIGHT_STRATEGIES

    stdout = ok(setup, "strategies")
    assert "weight strategies" in stdout and "workbench portfolio --strategy NAME" in stdout
    for w in WEIGHT_STRATEGIES:
        assert w.name in stdout and w.description[:40] in stdout
    assert "lookback=5 [1..126 step 1]" in stdout and "every=weekly {daily|weekly|monthly}" in stdout
    assert "risk_parity" in stdout and "ml_model(<model>[@<version>])" in stdout
    detail = ok(setup, "strategy_one")
    assert "xs_reversal (weight strategy" in detail and "lowest returns" in detail


@pytest.mark.parametrize("case", list(_bad_commands(Path("x"))))
def test_bad_input_is_one_line_and_a_non_zero_exit(setup: dict, case: str) -> None:
    res: CliResult = setup["results"][case]
    text = res.stdout + res.stderr
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert res.returncode != 0 and "Traceback" not in text, text
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    for want in setup["bad"][case][1]:
        assert want in lines[0], (want, lines[0])


def test_risk_limits_and_a_benchmark_symbol_from_the_command_line(setup: dict) -> None:
    from workbench.backtest import Allocator
    from workbench.backtest.portfolio import backtest_portfolio
    from workbench.backtest.portfolio_risk import RiskLimits

    stdout = ok(setup, "alloc_risk")
    assert "risk limits at the last rebalances" in stdout
    bound = [ln for ln in stdout.splitlines() if "vol_target" in ln and ln.startswith("│ 20")]
    assert bound and all("8.00%" in ln for ln in bound)  # the ex-ante volatility after targeting
    bars = {s: f.loc["2023-01-01":] for s, f in setup["bars"].items()}
    res = backtest_portfolio(bars, allocator=Allocator(method="risk_parity", window=63),
                             risk=RiskLimits(vol_target=0.08), benchmark="SPY")
    assert metric(stdout, "beta") == f"{res.metrics['beta']:.2f}"
    # beta and alpha by hand: the OLS of the book's bar returns on SPY's
    book = res.equity.pct_change().iloc[1:].to_numpy()
    spy = bars["SPY"]["close"].reindex(res.equity.index).ffill().pct_change().iloc[1:].to_numpy()
    slope, _ = np.polyfit(spy, book, 1)
    assert res.metrics["beta"] == pytest.approx(slope, rel=1e-6)
    assert res.risk_report is not None and (res.risk_report["bound"] == "vol_target").any()
