"""A weight strategy through the command line's research path, end to end on a small lake of three daily
equities: `workbench sweep allocate` -> `workbench optimize walk-forward` -> `workbench promote` ->
`workbench paper replay` of the artifact, each checked against what it wrote (the sweep table, the run
record, the artifact, the replay's parity with the backtest), and bad input refused in one line.

The commands run once, one after another, in a module fixture (in this process, through
`cli_runner.invoke`); the allocator's window and schedule are fixed so that the walk-forward stays small.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runner import CliResult, invoke
from test_cli_promote import LENIENT  # (every gate that promotion checks, set to pass)

from workbench import Lake
from workbench.backtest import Costs, load_bars
from workbench.backtest.metrics import format_metric
from workbench.backtest.rebalance import backtest_weights
from workbench.backtest.weight_strategies import ALLOCATE, weight_backtest_metrics
from workbench.data.sources.synthetic import SyntheticSource
from workbench.optimize import load_run
from workbench.promote.evidence import promoted_backtest

SYMS = "AAPL,MSFT,SPY"
U = ["--symbols", SYMS, "--timeframe", "1d"]
NAME = "allocate-aapl+msft+spy-1d"
RUN = "wf-alloc"


def _bad(out: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Bad input -> (arguments, strings its one error line must contain)."""
    return {
        "sizing": (["sweep", "--strategy", "allocate", *U, "--grid", "method=equal|hrp", "--sizing", "risk",
                    "--out", str(out / "bad.parquet")],
                   ["allocate is a weight strategy", "sizing rule (risk) would have no effect", "drop it"]),
        "unknown_param": (["sweep", "--strategy", "allocate", *U, "--grid", "windw=21:42",
                           "--out", str(out / "bad.parquet")],
                          ["unknown parameter 'windw'", "did you mean 'window'", "method, window, every"]),
        "wf_direction": (["optimize", "walk-forward", "--strategy", "allocate", *U, "--direction", "long"],
                         ["allocate is a weight strategy", "direction=long would have no effect"]),
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cli_weights")
    data, out = root / "data", root / "out"
    lake = Lake(data)
    src = SyntheticSource(seed=7)
    for sym in SYMS.split(","):
        lake.write_bars("synthetic", sym, "1d", src.bars(sym, "1d", "2020-01-01", "2021-01-01"))
    (root / "lenient.yaml").write_text(LENIENT)
    jobs = {
        "strategies": ["strategies"],
        "sweep": ["sweep", "--strategy", "allocate", *U, "--grid", "method=equal|inverse_vol,window=21|42",
                  "--fixed", "every=monthly", "--out", str(out / "alloc.parquet"), "--heatmap",
                  str(out / "alloc.html")],
        "wf": ["optimize", "walk-forward", "--strategy", "allocate", *U, "--folds", "2", "--trials", "3",
               "--fixed", "window=21,every=monthly", "--name", RUN],
        "promote": ["promote", RUN, "--gates", str(root / "lenient.yaml")],
        "replay": ["paper", "replay", NAME, "--start", "2020-09-01", "--end", "2021-01-01", "--report",
                   str(out / "parity.csv")],
        **{k: args for k, (args, _) in _bad(out).items()},
    }
    results = {k: invoke(args, data=data, cwd=root) for k, args in jobs.items()}
    return {"root": root, "data": data, "out": out, "lake": lake, "results": results}


def ok(setup: dict, name: str) -> str:
    res: CliResult = setup["results"][name]
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "error" not in res.stderr.lower(), res.stderr
    return res.stdout


def test_strategies_lists_allocate_among_the_weight_strategies(setup: dict) -> None:
    stdout = ok(setup, "strategies")
    weights = stdout[stdout.index("weight strategies"):]
    assert "│ allocate" in weights and "window=126 [21..504 step 21]" in weights
    assert "An allocator over the whole universe" in weights


def test_sweep_scores_each_combination_as_one_book(setup: dict) -> None:
    stdout = ok(setup, "sweep")
    assert re.search(r"sweeping allocate: 4 combinations on AAPL, MSFT, SPY as one portfolio", stdout)
    assert "4 runs on 1d bars" in stdout and "targets" in stdout
    table = pd.read_parquet(setup["out"] / "alloc.parquet")
    assert len(table) == 4 and set(table["symbol"]) == {SYMS} and (table["every"] == "monthly").all()
    assert (setup["out"] / "alloc.html").stat().st_size > 1000
    # a row of the table is the direct backtest of its parameters on the lake's bars (default costs)
    bars = load_bars(setup["lake"], SYMS.split(","), "1d")
    row = table[(table["method"] == "inverse_vol") & (table["window"] == 42)].iloc[0]
    direct = backtest_weights(ALLOCATE, bars, {"method": "inverse_vol", "window": 42, "every": "monthly"},
                              costs=Costs())
    eq = direct.equity.to_numpy()
    assert row["total_return"] == pytest.approx(eq[-1] / 100_000.0 - 1.0, rel=1e-12)
    m = weight_backtest_metrics(direct, bars, 252.0)
    assert row["n_open_trades"] == m["n_open_trades"] == 3  # every symbol held to the end
    # the best row by Sharpe is printed first in the top table, with the book's turnover (not round trips)
    best = table.sort_values("sharpe", ascending=False).iloc[0]
    header = next(ln for ln in stdout.splitlines() if ln.startswith("┃"))
    names = [c.strip() for c in header.strip("┃").split("┃")]
    first = next(ln for ln in stdout.splitlines() if ln.startswith("│") and SYMS in ln)
    cells = dict(zip(names, [c.strip() for c in first.strip("│").split("│")], strict=True))
    assert "win_rate" not in names and "n_trades" not in names
    assert cells["method"] == best["method"] and int(cells["window"]) == best["window"]
    assert cells["turnover"] == format_metric("turnover", best["turnover"]) != "0.00"


def test_walk_forward_then_promote_then_replay(setup: dict) -> None:
    wf = ok(setup, "wf")
    assert f"walk-forward {RUN}: 2 folds" in wf and "every=monthly" in wf and "window=21" in wf
    record = json.loads((setup["data"] / "runs" / RUN / "record.json").read_text())
    assert record["settings"]["strategy"] == "allocate" and record["settings"]["portfolio"] is True

    promoted = ok(setup, "promote")
    assert "all passed" in promoted and "clean over 5 cuts x 3 symbol(s)" in promoted
    assert re.search(rf"promoted {re.escape(NAME)}@v1: allocate method=\w+,window=21,every=monthly "
                     r"from fold 1", promoted)
    art = json.loads((setup["data"] / "registry" / NAME / "v1.json").read_text())
    assert art["strategy"] == "allocate" and art["portfolio"] is True and art["pins"] == {}
    assert art["symbols"] == SYMS.split(",") and art["params"]["window"] == 21
    last = pd.read_parquet(setup["data"] / "runs" / RUN / "folds.parquet").iloc[-1]
    assert art["params"]["method"] == last["param_method"]
    lookahead = art["evidence"]["lookahead"]
    assert lookahead["ok"] and sorted(lookahead["symbols"]) == sorted(SYMS.split(","))
    # the research report's backtest of the promoted parameters: the book's, over the run's bars
    shown = promoted_backtest(load_run(RUN, setup["data"] / "runs"), lake=setup["lake"])
    direct = backtest_weights(ALLOCATE, load_bars(setup["lake"], SYMS.split(","), "1d"), art["params"],
                              costs=Costs())
    assert np.allclose(shown.equity.to_numpy(), direct.equity.to_numpy(), rtol=1e-12)
    assert shown.metrics["total_return"] == pytest.approx(direct.equity.iloc[-1] / 100_000.0 - 1.0)
    # what the research report reads of a promoted backtest, a weight strategy's included
    assert shown.params == art["params"] and len(shown.figure().data) >= 2
    table = shown.metrics_frame(formatted=True).set_index("metric")
    assert table.loc["total_return", "value"].endswith("%")
    assert len(shown.trades) and set(shown.trades["symbol"]) <= set(SYMS.split(","))

    replay = ok(setup, "replay")
    found = re.search(r"parity: (\d+) of (\d+) trades equal the backtest's", replay)
    assert found and found.group(1) == found.group(2) and int(found.group(1)) >= 6, replay
    assert "replayed orders (journal)" in replay
    parity = pd.read_csv(setup["out"] / "parity.csv")
    assert len(parity) == int(found.group(1)) and set(parity["symbol"]) == set(SYMS.split(","))
    assert np.allclose(parity["replay_size"], parity["backtest_size"], rtol=1e-9)


@pytest.mark.parametrize("case", list(_bad(Path("x"))))
def test_bad_input_is_one_line_and_exit_1(setup: dict, case: str) -> None:
    res: CliResult = setup["results"][case]
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    for needle in _bad(Path("x"))[case][1]:
        assert needle in lines[0], lines[0]
    assert not (setup["out"] / "bad.parquet").exists()
