"""`workbench backtest`, `sweep` and `strategies` end to end on a small lake.

Every command of the module runs once in a module fixture, in this process through `cli_runner.invoke`
(the console script's own `run`: same output, errors and exit codes; the imports and numba compilation
are paid once), one after another since commands share the process. One command, the group's smoke
test, runs in a real process, started first so it overlaps the rest. The tests then read their own
command's output.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import NO_RESEARCH, CliResult, invoke, spawn

from workbench import Lake
from workbench.data.sources.synthetic import SyntheticSource
from workbench.strategies import list_strategies

SMOKE = "bt_one"  # the command run in a real process
BT = ["backtest", "--strategy", "sma_cross", "--symbols", "BTC/USDT"]
SW = ["sweep", "--strategy", "sma_cross", "--symbols", "BTC/USDT"]


def _ok_commands(out: Path) -> dict[str, list[str]]:
    return {
        "bt_one": [*BT, "--params", "fast=10,slow=40,short=true", "--costs", "fees=0.002,slippage=0.001",
                   "--fill", "close", "--html", str(out / "charts" / "bt.html"),
                   "--trades", str(out / "trades.csv")],
        "bt_two": ["backtest", "--strategy", "rsi_mr", "--symbols", "BTC/USDT,ETH/USDT", "--params",
                   "short=true,stop_loss=0.05", "--sizing", "volatility", "--target-vol", "0.3",
                   "--cash", "50000", "--html", str(out / "two.html")],
        "sw_parquet": [*SW, "--grid", "fast=5:20:5,slow=30|60", "--fixed", "short=false", "--out",
                       str(out / "sweep.parquet"), "--top", "3", "--heatmap", str(out / "heat.html"),
                       "--x", "fast", "--y", "slow"],
        "sw_csv": ["sweep", "--strategy", "sma_cross", "--symbols", "BTC/USDT,ETH/USDT", "--portfolio",
                   "--grid", "fast=5|10,slow=40", "--out", str(out / "sweep.csv"), "--by", "total_return",
                   "--fill", "close"],
        "sw_defaults": [*SW, "--grid", "fast=5|10", "--out", str(out / "defaults.csv")],
        "bt_lots": ["backtest", "--strategy", "sma_cross", "--symbols", "BTC/USDT,ETH/USDT", "--params",
                    "fast=10,slow=40", "--lots", "BTC/USDT:step=0.01;ETH/USDT:step=0.1,min_notional=100",
                    "--trades", str(out / "lots.csv")],
        "sw_lots": [*SW, "--grid", "fast=10|15", "--fixed", "slow=40", "--lots", "step=0.01", "--out",
                    str(out / "lots.parquet")],
        "strategies": ["strategies"],
        "strategy_one": ["strategies", "regime(macd)"],
    }


def _bad_commands(out: Path, blocker: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Bad input -> (arguments, strings its one error line must contain)."""
    return {
        "unknown_strategy": (["backtest", "--strategy", "sma_cros", "--symbols", "BTC/USDT"],
                             ["unknown strategy 'sma_cros'", "did you mean 'sma_cross'"]),
        "unknown_param": ([*BT, "--params", "fsat=5"], ["unknown parameter 'fsat'", "did you mean 'fast'"]),
        "out_of_range": ([*BT, "--params", "fast=1"], ["fast=1 is outside its range [5, 200]"]),
        "contradictory": ([*BT, "--params", "fast=60,slow=50"], ["fast=60, slow=50", "fast < slow"]),
        "bad_type": ([*BT, "--params", "short=maybe"], ["short='maybe' is not a valid bool"]),
        "malformed_params": ([*BT, "--params", "fast10"], ["--params: cannot parse 'fast10'", "name=value"]),
        "malformed_costs": ([*BT, "--costs", "fees=0.001,slipage=0.0005"],
                            ["cannot parse 'slipage=0.0005'", "fees=0.001,slippage=0.0005"]),
        "negative_fees": ([*BT, "--costs", "fees=-0.01"], ["fees=-0.01", "[0, 0.5)"]),
        "unknown_fill": ([*BT, "--fill", "next"], ["fill 'next' is unknown", "next_open"]),
        "sizing_clash": ([*BT, "--risk", "0.02"], ["--risk applies to --sizing risk"]),
        "symbol_missing": (["backtest", "--strategy", "sma_cross", "--symbols", "BTC/USTD"],
                           ["no data for symbol 'BTC/USTD'", "did you mean 'BTC/USDT'", "sync it"]),
        "too_few_bars": ([*BT, "--start", "2024-03-31"], ["needs at least 52 bars, got 24", "longer range"]),
        "html_suffix": ([*BT, "--html", str(out / "chart.png")], ["--html", "must end in .html"]),
        "malformed_grid": ([*SW, "--grid", "fast=5:50:x", "--out", str(out / "x.parquet")],
                           ["--grid: fast: 'x' is not a number"]),
        "grid_range_shape": ([*SW, "--grid", "fast=5:50:5:1", "--out", str(out / "x.parquet")],
                             ["cannot parse fast='5:50:5:1'", "start:stop:step"]),
        "grid_bool_range": ([*SW, "--grid", "short=0:1", "--out", str(out / "x.parquet")],
                            ["short is a bool parameter", "False|True"]),
        "grid_unknown": ([*SW, "--grid", "fsat=5|10", "--out", str(out / "x.parquet")],
                         ["did you mean 'fast'"]),
        "grid_infeasible": ([*SW, "--grid", "fast=100|150,slow=20:50:10", "--out", str(out / "x.parquet")],
                            ["no feasible combination", "fast < slow"]),
        "grid_fixed_clash": ([*SW, "--grid", "fast=5|10", "--fixed", "fast=5", "--out",
                              str(out / "x.parquet")], ["fast given in both --grid and --fixed"]),
        "sweep_too_few_bars": ([*SW, "--grid", "fast=5|10,slow=50", "--fixed", "short=false", "--start",
                                "2024-03-31", "--out", str(out / "x.parquet")], ["needs at least 52 bars"]),
        "out_suffix": ([*SW, "--grid", "fast=5|10", "--out", str(out / "x.txt")], [".parquet or .csv"]),
        "out_unwritable": ([*SW, "--grid", "fast=5|10", "--out", str(blocker / "x.parquet")],
                           ["cannot write --out", "is a file, not a folder"]),
        "sweep_too_large": (["sweep", "--strategy", "ml_classifier", "--symbols", "BTC/USDT", "--grid-all",
                             "--out", str(out / "x.parquet")],
                            ["3,456,000 runs, above 100,000", "drop --grid-all", "confirm with --yes"]),
        "sweep_names_nothing": ([*SW, "--out", str(out / "x.parquet")],
                                ["nothing to sweep in sma_cross: give values for fast, slow, short",
                                 "--grid-all"]),
        "lots_symbol": ([*BT, "--lots", "ETH/USDT:step=1"],
                        ["lots: 'ETH/USDT' is not among the symbols", "BTC/USDT"]),
        "lots_key": ([*BT, "--lots", "stp=1"], ["lots: cannot parse 'stp=1'", "did you mean 'step'"]),
        "bad_metric": ([*SW, "--grid", "fast=5|10", "--by", "sharp", "--out", str(out / "x.parquet")],
                       ["--by 'sharp' is not a metric", "did you mean 'sharpe'"]),
    }


def _run(data: Path, cwd: Path, args: list[str]) -> CliResult:
    """`workbench <args>` in this process."""
    return invoke(args, data=data, cwd=cwd)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A lake with three months of 1h BTC/USDT and ETH/USDT, and every command's result."""
    root = tmp_path_factory.mktemp("cli_backtest")
    data, out = root / "data", root / "out"
    lake = Lake(data)
    src = SyntheticSource(seed=7)
    start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
    for sym in ("BTC/USDT", "ETH/USDT"):
        lake.write_bars("synthetic", sym, "1h", src.bars(sym, "1h", start, end))
    blocker = root / "a_file"
    blocker.write_text("not a folder")
    ok, bad = _ok_commands(out), _bad_commands(out, blocker)
    jobs = {**ok, **{k: args for k, (args, _) in bad.items()}}
    smoke = spawn(jobs.pop(SMOKE), data=data, cwd=root)
    results = {k: _run(data, root, args) for k, args in jobs.items()}
    results[SMOKE] = smoke()
    return {"root": root, "data": data, "out": out, "results": results, "bad": bad}


def ok(setup: dict, name: str) -> str:
    proc = setup["results"][name]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def metric(stdout: str, name: str) -> str:
    found = re.search(rf"│ {name}\s+│\s+(\S+(?: \S+)?) │", stdout)
    assert found, f"{name} not in the metrics table"
    return found.group(1)


def test_backtest_prints_metrics_trades_inputs_and_writes_chart_and_trades(setup: dict) -> None:
    from workbench.backtest import Costs, backtest, load_bars
    from workbench.backtest.metrics import format_metric as fmt_metric

    stdout = ok(setup, "bt_one")
    assert "sma_cross fast=10,slow=40,short=True on BTC/USDT" in stdout
    assert "SYNTHETIC" in stdout
    bars = load_bars(Lake(setup["data"]), ["BTC/USDT"], "1h")
    want = backtest("sma_cross", bars, {"fast": 10, "slow": 40, "short": True},
                    costs=Costs(fees=0.002, slippage=0.001), fill="close")
    for key in ("total_return", "sharpe", "max_drawdown", "n_trades", "exposure", "profit_factor"):
        assert metric(stdout, key) == fmt_metric(key, want.metrics[key]), key
    assert metric(stdout, "total_return").endswith("%")
    assert re.fullmatch(r"-?\d+\.\d\d", metric(stdout, "sharpe"))
    assert "win rate" in stdout and "exits" in stdout  # the trades summary
    assert want.inputs["data_fingerprint"] in stdout and want.inputs["code_version"] in stdout
    assert "fees 0.002, slippage 0.001" in stdout and "│ fill" in stdout and "close" in stdout
    chart = setup["out"] / "charts" / "bt.html"
    assert chart.stat().st_size > 100_000 and "plotly" in chart.read_text()[:20_000].lower()
    assert f"wrote chart {chart}" in stdout
    trades = pd.read_csv(setup["out"] / "trades.csv")
    assert len(trades) == len(want.trades) and {"direction", "pnl", "exit_reason"} <= set(trades.columns)
    assert set(trades["direction"]) == {"long", "short"}


def test_backtest_of_two_symbols_is_one_portfolio_with_a_chart_each(setup: dict) -> None:
    stdout = ok(setup, "bt_two")
    assert "on BTC/USDT, ETH/USDT" in stdout
    assert re.search(r"│ all\s+│", stdout)  # the trades summary totals both symbols
    assert "volatility target 0.3" in stdout and "50,000" in stdout
    slash = "\\u002f"  # how plotly's JSON writes "/" in the page
    page = (setup["out"] / "two.html").read_text()  # the portfolio's page: its equity and drawdown
    assert "rsi_mr" in page and f"portfolio of BTC{slash}USDT, ETH{slash}USDT" in page
    assert "drawdown %" in page and "buy & hold" in page
    for sym in ("BTC-USDT", "ETH-USDT"):
        page = (setup["out"] / f"two_{sym}.html").read_text()  # each symbol: its price and trades only
        assert len(page) > 100_000 and f"{sym.replace('-', slash)} in a portfolio of 2" in page
        assert "drawdown %" not in page and "buy & hold" not in page


def test_lots_apply_to_backtest_and_sweep_as_in_the_api(setup: dict) -> None:
    """--lots is the API's Execution(lots=...): whole steps traded, the rule shown in the inputs."""
    from workbench.backtest import Execution, Lot, backtest, load_bars, sweep

    stdout = ok(setup, "bt_lots")
    assert "BTC/USDT: step 0.01; ETH/USDT: step 0.1, min_notional 100" in stdout
    trades = pd.read_csv(setup["out"] / "lots.csv")
    lake = Lake(setup["data"])
    bars = load_bars(lake, ["BTC/USDT", "ETH/USDT"], "1h")
    lots = {"BTC/USDT": Lot(step=0.01), "ETH/USDT": Lot(step=0.1, min_notional=100)}
    want = backtest("sma_cross", bars, {"fast": 10, "slow": 40}, execution=Execution(lots=lots))
    assert len(trades) == len(want.trades) > 0
    assert trades["size"].round(10).tolist() == want.trades["size"].round(10).tolist()
    for sym, step in (("BTC/USDT", 0.01), ("ETH/USDT", 0.1)):
        units = trades.loc[trades["symbol"] == sym, "size"] / step
        assert ((units - units.round()).abs() < 1e-6).all(), sym
    free = backtest("sma_cross", bars, {"fast": 10, "slow": 40})
    assert free.trades["size"].tolist() != want.trades["size"].tolist()  # the rule changed the sizes

    ok(setup, "sw_lots")
    table = pd.read_parquet(setup["out"] / "lots.parquet")
    one = load_bars(lake, ["BTC/USDT"], "1h")
    api = sweep("sma_cross", one, {"fast": [10, 15]}, fixed={"slow": 40},
                execution=Execution(lots=Lot(step=0.01))).table
    assert table["total_return"].tolist() == pytest.approx(api["total_return"].tolist(), rel=1e-12)


def test_strategies_lists_every_builtin_with_its_parameters(setup: dict) -> None:
    stdout = ok(setup, "strategies")
    for name in list_strategies(NO_RESEARCH):
        assert name in stdout
    assert "fast=10 [5..200 step 5]" in stdout and "fast < slow" in stdout
    assert "model=logistic {logistic|forest|hgb}" in stdout
    detail = ok(setup, "strategy_one")
    assert "regime(macd)" in detail and "regime.threshold" in detail and "macd.fast" in detail


def test_sweep_writes_parquet_and_heatmap_and_prints_the_top_rows(setup: dict) -> None:
    stdout = ok(setup, "sw_parquet")
    table = pd.read_parquet(setup["out"] / "sweep.parquet")
    assert len(table) == 8 and set(table["fast"]) == {5, 10, 15, 20} and set(table["slow"]) == {30, 60}
    assert "8 combinations" in stdout and "combos/s" in stdout
    assert "top 3 by sharpe" in stdout
    best = table[table["sharpe"].abs() < float("inf")].sort_values("sharpe", ascending=False).head(3)
    from workbench.backtest.metrics import format_metric as fmt_metric

    rows = [ln for ln in stdout.splitlines() if ln.startswith("│")]
    top_rows = rows[-3:]
    for line, (_, row) in zip(top_rows, best.iterrows(), strict=True):
        cells = [c.strip() for c in line.strip("│").split("│")]
        assert cells[:3] == [str(row["fast"]), str(row["slow"]), "BTC/USDT"]
        assert cells[3] == fmt_metric("sharpe", row["sharpe"])
    assert (setup["out"] / "heat.html").stat().st_size > 100_000
    assert "the inputs are in its metadata" in stdout


def test_sweep_keeps_unnamed_parameters_at_defaults_and_announces_count_and_estimate(setup: dict) -> None:
    stdout = ok(setup, "sw_defaults")
    table = pd.read_csv(setup["out"] / "defaults.csv")
    assert sorted(table["fast"]) == [5, 10] and set(table["slow"]) == {50} and set(table["short"]) == {False}
    found = re.search(r"sweeping sma_cross: 2 combinations on BTC/USDT, about (\d+) s; at their defaults: "
                      r"slow, short \(--grid-all walks them\)", stdout)
    assert found, stdout
    assert "eta" in setup["results"]["sw_defaults"].stderr  # the progress bar shows the time remaining


def test_sweep_as_a_portfolio_writes_csv(setup: dict) -> None:
    stdout = ok(setup, "sw_csv")
    table = pd.read_csv(setup["out"] / "sweep.csv")
    assert len(table) == 2  # fast 5|10, short at its default, one portfolio row each
    assert set(table["symbol"]) == {"BTC/USDT,ETH/USDT"}
    assert "as one portfolio" in stdout and "top 2 by total_return" in stdout
    assert "CSV keeps no inputs" in stdout


@pytest.mark.parametrize("case", sorted(_bad_commands(Path("o"), Path("b"))))
def test_bad_input_is_one_line_naming_the_problem(setup: dict, case: str) -> None:
    proc = setup["results"][case]
    needles = setup["bad"][case][1]
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_failed_runs_write_nothing(setup: dict) -> None:
    out = setup["out"]
    assert not (out / "x.parquet").exists() and not (out / "chart.png").exists()
    assert not list(out.glob(".*"))  # no probe or temp files left behind
