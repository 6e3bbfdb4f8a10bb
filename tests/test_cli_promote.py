"""`workbench promote` end to end on a small lake with two finished walk-forward runs.

A module fixture runs the commands in this process through `cli_runner.invoke` (imports paid once), one
after another since commands share the process: refusals and bad input, a forced v1, a gated v2,
everything that reads them, then a rollback. `promote ls` is the group's smoke test in a real process,
started beside the other readers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import spawn
from test_cli_backtest import _run

from workbench import Lake
from workbench.backtest import load_bars
from workbench.data.sources.synthetic import SyntheticSource
from workbench.optimize import save_run, walk_forward

NAME = "sma_cross-btc_usdt-1h"
LENIENT = """\
gates:
  oos_sharpe: {min: -100}
  pbo: {max: 1}
  oos_trades: {min: 1}
  lookahead: {required: true}
  data_fingerprint: {required: true}
"""


def _phase(data: Path, root: Path, jobs: dict[str, list[str]]) -> dict:
    return {k: _run(data, root, args) for k, args in jobs.items()}


def _bad(run_a: str, files: dict[str, Path]) -> dict[str, tuple[list[str], list[str]]]:
    """Bad input -> (arguments, strings its one error line must contain)."""
    return {
        "refused": (["promote", run_a], [f"run {run_a} failed", "promotion gate(s)", "(min 0.5)",
                                         "--force --reason"]),
        "force_no_reason": (["promote", run_a, "--force"], ["a forced promotion needs --reason '...'"]),
        "bad_yaml": (["promote", run_a, "--gates", str(files["bad"])],
                     [str(files["bad"]), "is not valid YAML", "fix the syntax"]),
        "unknown_gate": (["promote", "--gates", str(files["unknown"]), run_a],  # options first work too
                         ["gates.oos_sharp is not a known gate", "did you mean 'oos_sharpe'"]),
        "unknown_run": (["promote", "wf-nope", "--gates", str(files["lenient"])],
                        ["no walk-forward run 'wf-nope'", "optimize runs"]),
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cli_promote")
    data = root / "data"
    lake = Lake(data)
    start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
    lake.write_bars("synthetic", "BTC/USDT", "1h", SyntheticSource(seed=7).bars("BTC/USDT", "1h", start, end))
    bars = load_bars(lake, ["BTC/USDT"], "1h")
    runs = []
    for seed in (0, 1):
        res = walk_forward("sma_cross", bars, folds=3, n_trials=10, seed=seed, fixed={"short": False},
                           save=False, storage=str(root / f"wf{seed}.journal"))
        save_run(res, data / "runs")
        runs.append(res.run_id)
    files = {"lenient": root / "lenient.yaml", "bad": root / "bad.yaml", "unknown": root / "unknown.yaml"}
    files["lenient"].write_text(LENIENT)
    files["bad"].write_text("gates:\n  pbo: [max: 0.5\n")
    files["unknown"].write_text("gates:\n  oos_sharp: {min: 0.5}\n")
    a, b = runs
    bad = _bad(a, files)
    # refusals write nothing, so the forced promotion (v1) comes after them
    results = _phase(data, root, {**{k: args for k, (args, _) in bad.items()},
                                  "forced": ["promote", a, "--force", "--reason", "paper-test it anyway"]})
    results["gated"] = _run(data, root, ["promote", b, "--gates", str(files["lenient"])])
    v1 = data / "registry" / NAME / "v1.json"
    ls = spawn(["promote", "ls"], data=data, cwd=root)  # a real process, beside readers that write nothing
    results.update(_phase(data, root, {
        "again": ["promote", b, "--gates", str(files["lenient"])],
        "show": ["promote", "show", NAME], "show_v1": ["promote", "show", str(v1)],
        "diff": ["promote", "diff", f"{NAME}@1", f"{NAME}@v2"],
        "unknown_version": ["promote", "show", f"{NAME}@9"], "unknown_name": ["promote", "show", "sma_cross"],
        "rollback_no_reason": ["promote", "rollback", NAME]}))
    results["ls"] = ls()
    results["rollback"] = _run(data, root, ["promote", "rollback", NAME, "--reason", "v2 drifts live"])
    return {"root": root, "data": data, "runs": runs, "results": results, "bad": bad}


def ok(setup: dict, name: str) -> str:
    proc = setup["results"][name]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr.lower(), proc.stderr
    return proc.stdout


def error_line(setup: dict, name: str) -> str:
    proc = setup["results"][name]
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def gate_rows(stdout: str) -> dict[str, list[str]]:
    """The gate table: {gate: [value, rule, result, detail]}."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│") and len(cells) == 5 and cells[3] in ("pass", "FAIL"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("case", ["refused", "force_no_reason", "bad_yaml", "unknown_gate", "unknown_run"])
def test_bad_input_is_one_line_and_exit_1(setup: dict, case: str) -> None:
    line = error_line(setup, case)
    for part in setup["bad"][case][1]:
        assert part in line, line


def test_a_refusal_prints_the_gate_table(setup: dict) -> None:
    rows = gate_rows(setup["results"]["refused"].stdout)
    assert list(rows) == ["oos_sharpe", "deflated_sharpe", "sharpe_p_value", "pbo", "oos_trades",
                          "oos_max_drawdown", "walk_forward_efficiency", "lookahead", "data_fingerprint",
                          "model_oos"]
    failed = [g for g, r in rows.items() if r[2] == "FAIL"]
    assert failed and rows["lookahead"][2] == "pass" and rows["data_fingerprint"][2] == "pass"
    line = error_line(setup, "refused")
    for g in failed:
        assert f"{g}=" in line
    assert rows["oos_trades"][1] == "min 10" and rows["pbo"][1] == "max 0.5"


def test_group_help_lists_the_commands_and_the_run_form() -> None:
    from typer.testing import CliRunner

    from workbench.cli.app import app

    res = CliRunner().invoke(app, ["promote", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "workbench promote RUN_ID" in res.output
    for cmd in ("ls", "show", "diff", "rollback"):
        assert re.search(rf"│ {cmd}\s", res.output), cmd
    assert "│ run " not in res.output  # the fallback command is hidden


def test_forced_promotion_records_the_reason(setup: dict) -> None:
    out = ok(setup, "forced")
    a = setup["runs"][0]
    assert re.search(rf"promotion gates for {a}: \d+ failed, forced", out)
    assert f"promoted {NAME}@v1 (FORCED: paper-test it anyway): sma_cross fast=" in out
    path = setup["data"] / "registry" / NAME / "v1.json"
    assert f"artifact: {path}" in out
    art = json.loads(path.read_text())
    assert art["forced"] is True and art["force_reason"] == "paper-test it anyway" and art["run_id"] == a


def test_gated_promotion_is_v2_and_idempotent(setup: dict) -> None:
    out = ok(setup, "gated")
    rows = gate_rows(out)
    assert list(rows) == ["oos_sharpe", "pbo", "oos_trades", "lookahead", "data_fingerprint"]
    assert all(r[2] == "pass" for r in rows.values()) and "all passed" in out
    assert f"promoted {NAME}@v2: sma_cross" in out and "FORCED" not in out
    again = ok(setup, "again")
    assert f"{NAME}@v2 is already current" in again and "nothing written" in again
    written = sorted(p.name for p in (setup["data"] / "registry" / NAME).glob("v*.json"))
    assert written == ["v1.json", "v2.json"]


def _ls_rows(stdout: str) -> list[list[str]]:
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│") and cells and cells[0] == NAME:
            rows.append(cells)
    return rows


def test_ls_marks_the_current_version(setup: dict) -> None:
    rows = _ls_rows(ok(setup, "ls"))
    assert [(r[1], r[2]) for r in rows] == [("1", ""), ("2", "*")]
    assert "forced" in rows[0] and "forced" not in rows[1]
    assert rows[0][3] == "sma_cross" and rows[0][4] == setup["runs"][0] and rows[1][7] == "5/5"


def test_show_prints_params_market_costs_gates_evidence_and_history(setup: dict) -> None:
    out = ok(setup, "show")
    assert f"{NAME}@v2 (current)" in out
    for part in ("params", "fast=", "slow=", "short=False", "BTC/USDT", "1h (24/7, 8760 bars/year)",
                 "fees=0.001,slippage=0.0005", "next_open", "kind=fixed", "lookback", "fingerprint",
                 "sha256:", "forced", "chosen parameters per fold", "evidence", "history",
                 setup["runs"][1]):
        assert part in out, part
    assert len(gate_rows(out)) == 5
    v1 = ok(setup, "show_v1")
    assert f"{NAME}@v1" in v1 and "yes: paper-test it anyway" in v1 and "(current)" not in v1


def test_diff_lists_the_fields_that_differ(setup: dict) -> None:
    out = ok(setup, "diff")
    a, b = setup["runs"]
    assert re.search(r"@v1 vs .*@v2: \d+ difference\(s\)", out)
    assert re.search(rf"│ run_id\s+│ {a}\s+│ {b}\s+│", out)
    assert re.search(r"│ version\s+│ 1\s+│ 2\s+│", out) and re.search(r"│ forced\s+│ true\s+│ false\s+│", out)
    assert "│ strategy" not in out


def test_unknown_versions_and_rollback_errors(setup: dict) -> None:
    assert f"{NAME} has no version 9; it has v1, v2 (current v2)" in error_line(setup, "unknown_version")
    line = error_line(setup, "unknown_name")
    assert "no promoted strategy 'sma_cross'" in line and f"promoted: {NAME}" in line
    assert "a rollback needs a reason: --reason '...'" in error_line(setup, "rollback_no_reason")


def test_rollback_moves_current_and_logs_it(setup: dict) -> None:
    out = ok(setup, "rollback")
    assert f"{NAME}: current v2 -> v1" in out
    folder = setup["data"] / "registry" / NAME
    assert (folder / "CURRENT").read_text().strip() == "1"
    hist = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [(h["action"], h["version"]) for h in hist] == [("promote", 1), ("promote", 2), ("rollback", 1)]
    assert hist[-1]["reason"] == "v2 drifts live" and hist[0]["forced"] is True
