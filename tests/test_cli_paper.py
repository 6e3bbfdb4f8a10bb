"""`workbench paper` end to end: replay with a parity report, a scheduled run on an accelerated clock,
status, trade export, halt/resume, drift, bad input, and secrets never written.

The commands run in this process (`cli_runner.invoke`, the same entry point as the console script);
the secrets test runs `paper run` in a real process, the group's one subprocess smoke test, because
it checks everything that process prints (its -v log lines included) and writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import CliResult, invoke, run_process
from paper_helpers import build_lake, spec_for, write_artifact

UNSET = ("WORKBENCH_PAPER_CRASH", "WORKBENCH_CCXT_API_KEY", "WORKBENCH_CCXT_SECRET",
         "WORKBENCH_CCXT_BASE_URL")


def _run(data: Path, args: list[str], cwd: Path) -> CliResult:
    """`workbench <args>` in this process, with no crash point or exchange keys from the environment."""
    return invoke(args, data=data, cwd=cwd, env=dict.fromkeys(UNSET))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cli_paper")
    data = root / "data"
    build_lake(data, symbols=("BTC/USDT",))
    art = write_artifact(root / "fast.json", spec_for("sma_cross", {"fast": 5, "slow": 12}), name="fast")
    cfg = root / "paper.yaml"
    cfg.write_text(
        f"name: cli\nbroker: {{kind: sim}}\nstrategies: [{{artifact: {art}}}]\n"
        "risk: {max_bar_move: 0.5, stale_bars: 1000}\n"
        "schedule: {clock: {start: 2025-03-01, speed: 36000}}\ndata: {sync: false}\n"
    )
    run = _run(data, ["paper", "run", str(cfg), "--ticks", "40"], root)
    return {"root": root, "data": data, "art": art, "cfg": cfg, "run": run}


def test_replay_prints_parity_and_writes_the_report(setup: dict) -> None:
    report = setup["root"] / "out" / "parity.html"
    r = _run(
        setup["data"],
        [
            "paper",
            "replay",
            str(setup["art"]),
            "--start",
            "2025-03-01",
            "--end",
            "2025-03-08",
            "--report",
            str(report),
        ],
        setup["root"],
    )
    assert r.returncode == 0, r.stderr
    assert "parity:" in r.stdout and "trades equal the backtest's" in r.stdout
    assert "replayed trades (journal)" in r.stdout
    html = report.read_text()
    assert "Parity of fast@v1" in html and "backtest_exit_price" in html


def test_run_on_an_accelerated_clock_trades_and_status_shows_the_book(setup: dict) -> None:
    run = setup["run"]
    assert run.returncode == 0, run.stderr
    assert "simulated clock" in run.stdout and "stopped after 40 tick(s)" in run.stdout
    st = _run(setup["data"], ["paper", "status", str(setup["cfg"])], setup["root"])
    assert st.returncode == 0, st.stderr
    assert "fast@v1" in st.stdout and "no halts in force" in st.stdout
    assert "fills" in st.stdout


def test_trades_export_and_drift(setup: dict) -> None:
    out = setup["root"] / "trades.csv"
    r = _run(setup["data"], ["paper", "trades", str(setup["cfg"]), "--out", str(out)], setup["root"])
    assert r.returncode == 0, r.stderr
    trades = pd.read_csv(out)
    assert {"symbol", "entry_time", "exit_reason", "strategy"} <= set(trades.columns) and len(trades) >= 1
    f = _run(setup["data"], ["paper", "trades", str(setup["cfg"]), "--fills"], setup["root"])
    assert f.returncode == 0 and "fills (last" in f.stdout
    d = _run(setup["data"], ["paper", "drift", str(setup["cfg"])], setup["root"])
    assert d.returncode == 0, d.stderr
    assert "fast@v1: drift" in d.stdout


def test_halt_and_resume_are_journaled(setup: dict) -> None:
    bad = _run(setup["data"], ["paper", "halt", str(setup["cfg"])], setup["root"])
    assert bad.returncode == 1 and "needs --reason" in bad.stderr
    h = _run(setup["data"], ["paper", "halt", str(setup["cfg"]), "--reason", "maintenance"], setup["root"])
    assert h.returncode == 0 and "halted all: maintenance" in h.stdout
    st = _run(setup["data"], ["paper", "status", str(setup["cfg"])], setup["root"])
    assert "halts in force" in st.stdout and "maintenance" in st.stdout
    wrong = _run(
        setup["data"],
        ["paper", "resume", str(setup["cfg"]), "--reason", "x", "--strategy", "fsat@v1"],
        setup["root"],
    )
    assert wrong.returncode == 1 and "did you mean 'fast@v1'" in wrong.stderr
    r = _run(setup["data"], ["paper", "resume", str(setup["cfg"]), "--reason", "done"], setup["root"])
    assert r.returncode == 0 and "lifted 1 halt(s)" in r.stdout


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["paper", "run", "missing.yaml"], "does not exist"),
        (["paper", "status", "missing.yaml"], "does not exist"),
        (["paper", "replay", "nope@v9", "--start", "2025-03-01", "--end", "2025-03-02"], "nope"),
        (["paper", "replay", "ART", "--start", "2025-03-02", "--end", "2025-03-01"], "must be after start"),
        (
            ["paper", "replay", "ART", "--start", "2025-03-01", "--end", "2025-03-02", "--report", "x.txt"],
            "must end in .csv or .html",
        ),
        (["paper", "trades", "CFG", "--out", "x.json"], "must end in .csv or .parquet"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(setup: dict, args: list[str], match: str) -> None:
    args = [str(setup["art"]) if a == "ART" else str(setup["cfg"]) if a == "CFG" else a for a in args]
    r = _run(setup["data"], args, setup["root"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.network
def test_keys_never_reach_any_file_the_runner_writes(setup: dict, tmp_path: Path) -> None:
    """A run against the exchange fake with keys in a .env file: no output and no written file holds them."""
    sys.path.insert(0, str(Path(__file__).parent))
    from servers.binance_trading import API_KEY, SECRET, BinanceTradingServer

    data = tmp_path / "data"
    build_lake(data, symbols=("BTC/USDT",))
    spec = spec_for("sma_cross", {"fast": 5, "slow": 12}, capital=5_000.0)  # within the fake's lot limits
    art = write_artifact(tmp_path / "fast.json", spec, name="keyed")
    with BinanceTradingServer() as fake:
        fake.set_price("BTC/USDT", 500.0)
        cfg = tmp_path / "paper.yaml"
        cfg.write_text(
            f"name: keyed\nbroker: {{kind: ccxt, options: {{base_url: '{fake.url}', timeout: 2, retries: 1, "
            "retry_wait: 0.01, recv_window: 0.5}}\n"
            f"strategies: [{{artifact: {art}}}]\nrisk: {{max_bar_move: 0.5, stale_bars: 1000}}\n"
            "schedule: {clock: {start: '2025-03-02T03:00:00Z', speed: 7200}}\ndata: {sync: false}\n"
        )  # a long entry signal closes at 07:00
        (tmp_path / ".env").write_text(f"WORKBENCH_CCXT_API_KEY={API_KEY}\nWORKBENCH_CCXT_SECRET={SECRET}\n")
        r = run_process(["-v", "paper", "run", str(cfg), "--ticks", "20"], data=data, cwd=tmp_path,
                        env=dict.fromkeys(UNSET))  # a real process, as a user runs it
        assert r.returncode == 0, r.stderr
        assert fake.created >= 1, "the run should have traded on the fake exchange"
        st = _run(data, ["paper", "status", str(cfg)], tmp_path)
        tr = _run(data, ["paper", "trades", str(cfg), "--out", str(tmp_path / "t.csv")], tmp_path)
    secrets = [API_KEY.encode(), SECRET.encode()]
    for text in (r.stdout, r.stderr, st.stdout, st.stderr, tr.stdout):
        assert API_KEY not in text and SECRET not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".env"]
    assert any(p.name == "journal.sqlite" for p in written)
    for p in written:
        blob = p.read_bytes()
        for s in secrets:
            assert s not in blob, f"{p} holds a key"


def test_a_resumed_replay_with_nothing_left_says_so_instead_of_a_zero_tick_time(setup: dict) -> None:
    args = ["paper", "replay", str(setup["art"]), "--start", "2025-03-01", "--end", "2025-03-03",
            "--journal", str(setup["root"] / "resumable")]
    first = _run(setup["data"], args, setup["root"])
    assert first.returncode == 0 and "tick median" in first.stdout, first.stderr
    again = _run(setup["data"], args, setup["root"])
    assert again.returncode == 0, again.stderr
    assert "tick median" not in again.stdout and "0.00 ms" not in again.stdout, again.stdout
    assert "nothing left to tick: the journal already held every bar" in again.stdout
