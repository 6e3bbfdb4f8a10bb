"""`workbench optimize` end to end on a small synthetic lake.

The walk-forward and every bad-input command run in a module fixture, in this process through
`cli_runner.invoke` (imports and numba paid once), one after another since commands share the process;
`runs`, `show` and `worker` then read the record and study the walk-forward left behind. `show` is the
group's smoke test in a real process (`test_cli` interrupts a real worker).
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from cli_runner import spawn
from test_cli_backtest import _run

from workbench import Lake
from workbench.data.sources.synthetic import SyntheticSource

WF = ["optimize", "walk-forward", "--strategy", "sma_cross", "--symbols", "BTC/USDT", "--timeframe", "1h"]
OK = [*WF, "--folds", "3", "--trials", "8", "--fixed", "short=false"]


def _bad_commands() -> dict[str, tuple[list[str], list[str]]]:
    """Bad input -> (arguments, strings its one error line must contain)."""
    return {
        "bad_objective": ([*OK, "--objective", "sharp"], ["objective 'sharp' is unknown", "sharpe"]),
        "too_many_folds": ([*WF, "--folds", "500", "--trials", "8", "--fixed", "short=false"],
                           ["fold 0 has", "train bars", "needs at least 502"]),
        "unreachable_storage": ([*OK, "--storage", "postgresql://u@127.0.0.1:1/db"],
                                ["cannot reach study storage", "127.0.0.1:1"]),
        "lots_symbol": ([*OK, "--lots", "SPY:step=1"], ["lots: 'SPY' is not among the symbols"]),
        "bad_train": ([*OK, "--train", "abc"], ["--train 'abc'", "number of bars", "duration"]),
        "unknown_run": (["optimize", "show", "nope"], ["no walk-forward run 'nope'", "optimize runs"]),
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A lake with three months of 1h BTC/USDT, a finished walk-forward and every bad command's result."""
    root = tmp_path_factory.mktemp("cli_optimize")
    data, out = root / "data", root / "out"
    lake = Lake(data)
    src = SyntheticSource(seed=7)
    start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
    lake.write_bars("synthetic", "BTC/USDT", "1h", src.bars("BTC/USDT", "1h", start, end))
    bad = _bad_commands()
    jobs = {"wf": [*OK, "--html", str(out / "wf.html"), "--lots", "step=0.001"],
            **{k: args for k, (args, _) in bad.items()}}
    results = {k: _run(data, root, args) for k, args in jobs.items()}
    found = re.search(r"walk-forward (wf-sma_cross-[0-9a-f]{10}): 3 folds", results["wf"].stdout)
    run_id = found.group(1) if found else None
    if run_id:  # then what reads the finished run; `show` in a real process, beside the others
        journal = data / "optimize" / f"{run_id}.journal"
        show = spawn(["optimize", "show", run_id], data=data, cwd=root)
        results["runs"] = _run(data, root, ["optimize", "runs"])
        results["worker"] = _run(data, root, ["optimize", "worker", run_id, "--storage", str(journal)])
        results["show"] = show()
    return {"root": root, "data": data, "out": out, "results": results, "bad": bad, "run_id": run_id}


def ok(setup: dict, name: str) -> str:
    proc = setup["results"][name]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr.lower()
    return proc.stdout


def fold_rows(stdout: str) -> list[list[str]]:
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│") and len(cells) == 8 and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_walk_forward_prints_the_fold_table_and_diagnostics(setup: dict) -> None:
    from workbench.optimize import load_run

    stdout = ok(setup, "wf")
    run_id = setup["run_id"]
    assert run_id, stdout
    for col in ("fold", "test window", "params", "IS", "OOS", "OOS return", "trades", "PBO"):
        assert col in stdout
    rows = fold_rows(stdout)
    assert [r[0] for r in rows] == ["0", "1", "2"]
    for r in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \.\. \d{4}-\d\d-\d\d", r[1])
        assert re.fullmatch(r"fast=\d+, slow=\d+, short=False", r[2]) or r[2] == "no feasible trial"
    assert "deflated Sharpe" in stdout and "PBO (CSCV" in stdout and "OOS total return" in stdout
    assert f"run record: {setup['data'] / 'runs' / run_id}" in stdout
    assert f"wrote chart {setup['out'] / 'wf.html'}" in stdout
    assert (setup["out"] / "wf.html").stat().st_size > 100_000

    # the printed table is the saved record's
    rec = load_run(run_id, setup["data"] / "runs")
    assert len(rec.folds) == 3 and (rec.folds["n_trials"] == 8).all()
    for r, (_, f) in zip(rows, rec.folds.iterrows(), strict=True):
        assert r[1].startswith(f"{pd.Timestamp(f['test_start']):%Y-%m-%d}")
        assert r[6] == str(int(f["oos_n_trades"]))
        if pd.notna(f["best_trial"]):
            assert r[2] == f"fast={int(f['param_fast'])}, slow={int(f['param_slow'])}, short=False"
    assert rec.settings["fixed"] == {"short": False} and rec.settings["symbols"] == ["BTC/USDT"]
    assert rec.settings["lots"] == {"BTC/USDT": {"step": 0.001, "min_qty": 0.0, "min_notional": 0.0}}
    n = rec.diagnostics.n_trials
    assert re.search(rf"deflated Sharpe ratio\s+│ \d\.\d{{3}} \({n} trials\)", stdout)


def test_runs_lists_the_run(setup: dict) -> None:
    stdout = ok(setup, "runs")
    assert "walk-forward runs" in stdout and "BTC/USDT" in stdout and "sma_cro" in stdout
    assert len([ln for ln in stdout.splitlines() if ln.startswith("│ wf-")]) == 1


def test_runs_shows_the_whole_run_id(setup: dict) -> None:
    assert setup["run_id"] in ok(setup, "runs")


def test_show_prints_the_saved_run(setup: dict) -> None:
    stdout = ok(setup, "show")
    assert f"walk-forward {setup['run_id']}: 3 folds" in stdout
    assert fold_rows(stdout) == fold_rows(ok(setup, "wf"))
    assert "deflated Sharpe" in stdout


def test_a_worker_joining_a_finished_run_has_nothing_to_do(setup: dict) -> None:
    stdout = ok(setup, "worker")
    assert "worker finished: 0 trials" in stdout


@pytest.mark.parametrize("case", sorted(_bad_commands()))
def test_bad_input_is_one_error_line(setup: dict, case: str) -> None:
    proc = setup["results"][case]
    needles = setup["bad"][case][1]
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_failed_commands_write_no_run(setup: dict) -> None:
    data, run_id = setup["data"], setup["run_id"]
    assert sorted(p.name for p in (data / "optimize").iterdir()) == [f"{run_id}.journal"]
    assert sorted(p.name for p in (data / "runs").iterdir()) == [run_id]
    assert not (setup["root"] / "db").exists()
